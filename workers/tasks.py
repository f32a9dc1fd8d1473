"""Tasks take ids, never bytes, and call the pipeline."""
from __future__ import annotations

import logging
import time

from celery import shared_task

from workers import monitoring
from config.logging import REQUEST_ID
from workers.base import RETRYABLE, StoreTask
from workers.queue import DRAIN_TASK, SmallFileQueue, ingest_queue, ingest_queue_depth

log = logging.getLogger(__name__)

DRAIN_BATCH = 32


def _ingest(store, file_id: str, request_id: str | None):
    started = time.monotonic()
    report = store.ingest(file_id)
    _ingested(report, request_id, time.monotonic() - started)
    return report


def _ingested(report, request_id: str | None, seconds: float) -> None:
    file_id = report.file_id
    monitoring.observe_ingest(report, seconds)
    log.info("ingest %s request=%s status=%s chunks=%d new=%d dedup=%d bytes=%d %.3fs", file_id,
             request_id, report.status, report.chunks, report.new_chunks, report.deduplicated,
             report.bytes_written, report.seconds,
             extra={"file_id": file_id, "status": report.status, "chunks": report.chunks,
                    "new_chunks": report.new_chunks, "deduplicated": report.deduplicated,
                    "bytes_written": report.bytes_written, "seconds": round(report.seconds, 3)})


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
        request_ids = dict(batch)
        # the batch's one-page files together; the others, and all of them when the batch meets
        # anything unusual, one at a time
        try:
            ingested, rest = self.store.ingest_many(list(request_ids))
        except RETRYABLE as exc:
            log.warning("ingest of %d small files together: %r; one at a time instead", len(request_ids), exc)
            ingested, rest = {}, list(request_ids)
        for file_id, report in ingested.items():
            REQUEST_ID.set(request_ids[file_id] or "-")
            _ingested(report, request_ids[file_id], report.seconds)
        for file_id in rest:
            REQUEST_ID.set(request_ids[file_id] or "-")
            try:
                _ingest(self.store, file_id, request_ids[file_id])
            except RETRYABLE as exc:  # this file alone goes the task way, with its retries
                log.warning("ingest %s: %r; queued as its own task", file_id, exc)
                retry(file_id, request_ids[file_id])
        done += len(request_ids)
        REQUEST_ID.set("-")


@shared_task(name="minis3.requeue_stuck", base=StoreTask, bind=True)
def requeue_stuck(self) -> list[str]:
    ids = self.store.garbage_collector().stuck_files()
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
    removed = self.store.garbage_collector().clean_spool()
    if removed:
        log.info("removed %d abandoned spool director(y/ies)", len(removed))
    return removed


@shared_task(name="minis3.gc", base=StoreTask, bind=True)
def gc(self) -> dict:
    report = self.store.garbage_collector().collect()
    monitoring.observe_gc(report)
    return report


@shared_task(name="minis3.sample", base=StoreTask, bind=True)
def sample(self) -> dict:
    """The store's figures now (queue depth, throughput, bytes) and each tenant's usage."""
    usage = self.store.usage()
    figures = usage.take_sample(ingest_queue_depth(self.app, self.store.redis))
    usage.refresh_usage()
    return {"queueDepth": figures["queueDepth"], "storedBytes": figures["storedBytes"]}


@shared_task(name="minis3.abort_abandoned_uploads", base=StoreTask, bind=True)
def abort_abandoned_uploads(self) -> int:
    """Abort multipart uploads nobody touched for MINIS3_MULTIPART_ABANDON_S; their parts' chunks
    come back through GC."""
    aborted = self.store.object_names().abort_abandoned(self.store.settings.multipart_abandon_s)
    if aborted:
        log.info("aborted %d abandoned multipart upload(s)", aborted)
    return aborted


@shared_task(name="minis3.lifecycle", base=StoreTask, bind=True)
def lifecycle(self) -> dict:
    """Apply the buckets' lifecycle rules: a bounded batch of names per bucket from each one's saved
    cursor; expired objects' chunks come back through GC. One run at a time."""
    from pipeline.namespace.lifecycle import apply_lifecycle

    settings = self.store.settings
    lock = self.store.redis.lock("minis3:lifecycle:lock", timeout=max(60.0, settings.lifecycle_interval_s * 4),
                                 blocking=False, thread_local=False)
    if not lock.acquire(blocking=False):
        return {"skipped": True}
    try:
        return apply_lifecycle(self.store.object_names(), settings.lifecycle_day_s)
    finally:
        try:
            lock.release()
        except Exception:  # expired: harmless, a run is idempotent
            pass


@shared_task(name="minis3.heal", base=StoreTask, bind=True)
def heal(self, *chunk_hashes: str) -> list[dict]:
    """Heal these chunks, one after the other (a read that found a page of damaged chunks queues
    them in one task)."""
    healer = self.store.healer()
    out = []
    for chunk_hash in chunk_hashes:
        result = healer.heal_chunk(chunk_hash)
        monitoring.observe_heal(result)
        log.info("heal %s: %s rebuilt=%s quarantined=%s %s", chunk_hash, result.status, result.rebuilt,
                 result.quarantined, result.reason)
        out.append({"chunk": chunk_hash, "status": result.status, "rebuilt": result.rebuilt})
    return out


@shared_task(name="minis3.heal_flagged", base=StoreTask, bind=True)
def heal_flagged(self) -> dict:
    """Chunks flagged for heal whose task was lost or could not finish (a node was down)."""
    lock = self.store.redis.lock("minis3:heal:lock", timeout=600, blocking=False, thread_local=False)
    if not lock.acquire(blocking=False):
        return {"skipped": True}
    try:
        report = self.store.healer().heal_all(full_scan=False)
    finally:
        try:
            lock.release()
        except Exception:  # expired: harmless, heal is idempotent
            pass
    monitoring.observe_heal_report(report)
    if report.chunks_checked:
        log.info("heal of flagged chunks: %s", report.to_json())
    return report.to_json()


@shared_task(name="minis3.scrub", base=StoreTask, bind=True)
def scrub(self, budget_s: float | None = None) -> dict:
    from pipeline.maintenance import scrub as scrubbing

    budget = budget_s if budget_s is not None else scrub_slice_s(self.store.settings) * 0.8
    lock = self.store.redis.lock(scrubbing.LOCK, timeout=max(60, budget * 4), blocking=False, thread_local=False)
    if not lock.acquire(blocking=False):
        return {"skipped": True}
    try:
        report = self.store.scrubber().run_slice(budget_s=budget)
    finally:
        try:
            lock.release()
        except Exception:
            pass
    monitoring.observe_scrub(report)
    return report.to_json()


@shared_task(name="minis3.ec_convert", base=StoreTask, bind=True)
def ec_convert(self) -> dict:
    return self.store.node_operations().convert_all().to_json()


@shared_task(name="minis3.drain", base=StoreTask, bind=True)
def drain(self, node: str) -> dict:
    return self.store.node_operations().drain_node(node).to_json()


def scrub_slice_s(settings) -> float:
    """How often beat runs a slice of the scrub (each slice reads for most of that time)."""
    return max(1.0, min(60.0, settings.scrub_period_s / 10))
