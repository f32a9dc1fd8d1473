"""One base task class: retry policy, time limits, and the per-process object store."""
from __future__ import annotations

import logging

import pymongo.errors
import redis
from celery import Task

from pipeline.errors import ChunkBusy, NodesUnavailable, ServiceUnavailable
from pipeline.store import ObjectStore
from workers.wiring import build_store

log = logging.getLogger(__name__)

RETRYABLE = (pymongo.errors.ConnectionFailure, pymongo.errors.ServerSelectionTimeoutError,
             pymongo.errors.AutoReconnect, redis.ConnectionError, redis.TimeoutError, ChunkBusy,
             NodesUnavailable, ServiceUnavailable)


class StoreTask(Task):
    abstract = True
    autoretry_for = RETRYABLE
    retry_backoff = 1
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = None  # beat's stuck-file sweep is the backstop; a retry is always harmless
    acks_late = True
    soft_time_limit = 6 * 3600
    time_limit = 6 * 3600 + 60

    _store: ObjectStore | None = None

    @property
    def store(self) -> ObjectStore:
        # built lazily in each worker process, after the prefork: pymongo clients must not cross a fork
        if StoreTask._store is None:
            StoreTask._store = build_store(self.app.minis3_settings, self.app, strict=True)
        return StoreTask._store
