"""Tasks take ids, never bytes, and call the pipeline."""
from __future__ import annotations

import logging
import time

from celery import shared_task

from pipeline import maintenance, usage
from pipeline.objects import ObjectNames
from workers import monitoring
from config.logging import REQUEST_ID
from workers.base import RETRYABLE, StoreTask
from workers.queue import DRAIN_TASK, SmallFileQueue, ingest_queue, ingest_queue_depth

log = logging.getLogger(__name__)

DRAIN_BATCH = 32


def _ingest(store, file_id: str, request_id: str | None):
    started = time.monotonic()
    report = store.ingest(file_id)
    monitoring.observe_ingest(report, time.monotonic() - started)
    log.info("ingest %s request=%s status=%s chunks=%d new=%d dedup=%d bytes=%d %.3fs", file_id,
             request_id, report.status, report.chunks, report.new_chunks, report.deduplicated,
             report.bytes_written, report.seconds,
             extra={"file_id": file_id, "status": report.status, "chunks": report.chunks,
                    "new_chunks": report.new_chunks, "deduplicated": report.deduplicated,
                    "bytes_written": report.bytes_written, "seconds": round(report.seconds, 3)})
    return report


@shared_task(name="minis3.ingest", base=StoreTask, bind=True)
def ingest(self, file_id: str, request_id: str | None = None) -> dict:
    report = _ingest(self.store, file_id, request_id)
    return {"fileId": file_id, "status": report.status}


@shared_task(name="minis3.ingest_small", base=StoreTask, bind=True)
def ingest_small(self) -> int:
    """Drain the small-file list (workers.queue) while it has files; one drain at a time."""
    queue = SmallFileQueue(self.store.redis)
    retry = ingest_queue(self.app)
    done = 0
    while True:
        batch = queue.pop(DRAIN_BATCH)
        if not batch:
            if queue.release():
                continue
            return done
        for file_id, request_id in batch:
            REQUEST_ID.set(request_id or "-")
            try:
                _ingest(self.store, file_id, request_id)
            except RETRYABLE as exc:  # this file alone goes the task way, with its retries
                log.warning("ingest %s: %r; queued as its own task", file_id, exc)
                retry(file_id, request_id)
            done += 1
        REQUEST_ID.set("-")


@shared_task(name="minis3.requeue_stuck", base=StoreTask, bind=True)
def requeue_stuck(self) -> list[str]:
    ids = maintenance.stuck_files(self.store)
    enqueue = ingest_queue(self.app)
    for file_id in ids:
        enqueue(file_id)
    if ids:
        log.info("re-queued %d stuck file(s)", len(ids))
    if SmallFileQueue(self.store.redis).claim():  # small files listed while no drain ran
        self.app.send_task(DRAIN_TASK)
    return ids


@shared_task(name="minis3.clean_spool", base=StoreTask, bind=True)
def clean_spool(self) -> list[str]:
    removed = maintenance.clean_spool(self.store)
    if removed:
        log.info("removed %d abandoned spool director(y/ies)", len(removed))
    return removed


@shared_task(name="minis3.gc", base=StoreTask, bind=True)
def gc(self) -> dict:
    report = maintenance.collect_garbage(self.store)
    monitoring.observe_gc(report)
    return report


@shared_task(name="minis3.sample", base=StoreTask, bind=True)
def sample(self) -> dict:
    """The store's figures now (queue depth, throughput, bytes) and each tenant's usage."""
    figures = usage.take_sample(self.store, ingest_queue_depth(self.app, self.store.redis))
    usage.refresh_usage(self.store.repo)
    return {"queueDepth": figures["queueDepth"], "storedBytes": figures["storedBytes"]}


@shared_task(name="minis3.abort_abandoned_uploads", base=StoreTask, bind=True)
def abort_abandoned_uploads(self) -> int:
    """Abort multipart uploads nobody touched for MINIS3_MULTIPART_ABANDON_S; their parts' chunks
    come back through GC."""
    aborted = ObjectNames(self.store).abort_abandoned(self.store.settings.multipart_abandon_s)
    if aborted:
        log.info("aborted %d abandoned multipart upload(s)", aborted)
    return aborted
