"""The one way every process (web, S3, worker, command line) builds its store.

Each process gets the same collaborators: the store over settings' MongoDB, Redis and nodes,
prepared at start, and a heal queue, so that damage any read finds is healed at once instead of
waiting for the heal sweep.
"""
from __future__ import annotations

import logging
from typing import Callable

from celery import Celery

from config.settings import Settings
from pipeline.store import ObjectStore
from workers.celery import make_celery

log = logging.getLogger(__name__)


def heal_sender(celery: Celery) -> Callable[..., None]:
    """Queue ``heal(*chunks)`` as one task; when the broker is down the chunks stay flagged for the
    heal sweep, ``minis3 heal`` and scrub."""

    def heal(*chunk_hashes: str) -> None:
        try:
            celery.send_task("minis3.heal", args=list(chunk_hashes), retry=False)
        except Exception as exc:
            log.warning("could not queue a heal of %d chunk(s) (%r); they stay flagged", len(chunk_hashes), exc)

    return heal


def build_store(settings: Settings, celery: Celery | None = None, *, strict: bool = False,
                store: ObjectStore | None = None, heal: bool = True) -> ObjectStore:
    """The process's store (``store``, when a caller made its own), prepared, with heals queued
    through ``celery`` (one built from ``settings`` by default). ``strict`` raises when MongoDB
    cannot be prepared; otherwise the process starts and answers 503 until it is back."""
    store = store or ObjectStore.from_settings(settings)
    try:
        store.prepare()
    except Exception as exc:
        if strict:
            raise
        log.warning("could not prepare store at start (%r); will retry per request", exc)
    if heal and store.heal_enqueue is None:
        store.heal_enqueue = heal_sender(celery or make_celery(settings))
    return store
