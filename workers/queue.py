"""The one way ingest is queued, for the web app, beat's re-queue of stuck files and fsck.

``ingest_queue(celery, redis_client)`` returns ``enqueue(file_id, request_id=None, small=False)``.
It never raises: when the broker is down the file stays ``queued`` in MongoDB, where beat's
stuck-file sweep finds it and queues it again.

A large file is one ingest task. A small file (one chunk) goes on a Redis list instead, and one
``minis3.ingest_small`` task at a time drains that list, up to 32 files at a time, which it
ingests together (``Ingestor.ingest_many``: one MongoDB query per step for all of them): a task
per 4 KiB file cost the worker more in Celery's own work than the ingest itself, and the web more
to publish it than two Redis commands. Each file keeps its guarantees: it is durable and ``queued``
in MongoDB before it is listed, ingest is idempotent per file, and a drain that dies leaves its
files ``queued`` for beat to re-queue (beat also starts a drain when the list waits without one).
"""
from __future__ import annotations

import logging
from typing import Callable

import redis
from celery import Celery

log = logging.getLogger(__name__)

INGEST_TASK = "minis3.ingest"
DRAIN_TASK = "minis3.ingest_small"
Enqueue = Callable[..., None]


class SmallFileQueue:
    """Small files waiting for the drain task, and the flag that says one drain is running."""

    LIST = "minis3:ingest:small"
    FLAG = "minis3:ingest:draining"
    FLAG_TTL_S = 30  # a drain that died stops holding the flag after this

    def __init__(self, client: redis.Redis):
        self.client = client

    def push(self, file_id: str, request_id: str | None) -> bool:
        """List a file; True when no drain holds the flag and the caller must start one."""
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(self.LIST, f"{file_id} {request_id or '-'}")
        pipe.set(self.FLAG, "1", nx=True, ex=self.FLAG_TTL_S)
        return bool(pipe.execute()[1])

    def claim(self) -> bool:
        """Take the flag for a drain when files wait and nobody drains them."""
        return self.client.llen(self.LIST) > 0 and bool(self.client.set(self.FLAG, "1", nx=True,
                                                                          ex=self.FLAG_TTL_S))

    def pop(self, count: int) -> list[tuple[str, str | None]]:
        """The next files, the flag renewed for another round."""
        pipe = self.client.pipeline(transaction=False)
        pipe.lpop(self.LIST, count)
        pipe.expire(self.FLAG, self.FLAG_TTL_S)
        items = pipe.execute()[0] or []
        out = []
        for item in items:
            file_id, _, request_id = item.decode().partition(" ")
            out.append((file_id, None if request_id in ("", "-") else request_id))
        return out

    def waiting(self) -> int:
        return int(self.client.llen(self.LIST))

    def release(self) -> bool:
        """Give the flag up once the list is empty; True when a file arrived meanwhile and the
        caller took the flag again (the pusher saw it held and started no drain)."""
        self.client.delete(self.FLAG)
        return self.claim()


def ingest_queue(celery: Celery, redis_client: redis.Redis | None = None) -> Enqueue:
    small_files = SmallFileQueue(redis_client) if redis_client is not None else None

    def enqueue(file_id: str, request_id: str | None = None, small: bool = False) -> None:
        try:
            if small and small_files is not None:
                if small_files.push(file_id, request_id):
                    celery.send_task(DRAIN_TASK, retry=False)
                return
            celery.send_task(INGEST_TASK, args=[file_id], kwargs={"request_id": request_id}, retry=False)
        except Exception as exc:  # any broker failure: the record is durable and beat re-queues it
            log.warning("could not enqueue ingest of %s (%r); beat will re-queue it", file_id, exc)

    return enqueue


def ingest_queue_depth(celery: Celery, redis_client: redis.Redis | None = None) -> Callable[[], int]:
    """Files waiting for ingest: ingest tasks in the broker plus small files listed for the drain."""
    from workers.celery import queue_depth_reader

    tasks = queue_depth_reader(celery)
    small_files = SmallFileQueue(redis_client) if redis_client is not None else None

    def depth() -> int:
        return tasks() + (small_files.waiting() if small_files is not None else 0)

    return depth
