"""The one way ingest is queued, for the web app, beat's re-queue of stuck files and fsck.

``ingest_queue(celery)`` returns ``enqueue(file_id, request_id=None)``: it sends the ingest task by
name (the caller needs no task module) and never raises: when the broker is down the file stays
``queued`` in MongoDB, where beat's stuck-file sweep finds it and queues it again.
"""
from __future__ import annotations

import logging
from typing import Callable

from celery import Celery

log = logging.getLogger(__name__)

INGEST_TASK = "minis3.ingest"
Enqueue = Callable[..., None]


def ingest_queue(celery: Celery) -> Enqueue:
    def enqueue(file_id: str, request_id: str | None = None) -> None:
        try:
            celery.send_task(INGEST_TASK, args=[file_id], kwargs={"request_id": request_id}, retry=False)
        except Exception as exc:  # any broker failure: the record is durable and beat re-queues it
            log.warning("could not enqueue ingest of %s (%r); beat will re-queue it", file_id, exc)

    return enqueue
