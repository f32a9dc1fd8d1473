"""Tasks take ids, never bytes, and call the pipeline."""
from __future__ import annotations

import logging
import time

from celery import shared_task

from pipeline import maintenance
from workers import monitoring
from workers.base import StoreTask

log = logging.getLogger(__name__)


@shared_task(name="minis3.ingest", base=StoreTask, bind=True)
def ingest(self, file_id: str, request_id: str | None = None) -> dict:
    started = time.monotonic()
    report = self.store.ingest(file_id)
    monitoring.observe_ingest(report, time.monotonic() - started)
    log.info("ingest %s request=%s status=%s chunks=%d new=%d dedup=%d bytes=%d %.3fs", file_id,
             request_id, report.status, report.chunks, report.new_chunks, report.deduplicated,
             report.bytes_written, report.seconds)
    return {"fileId": file_id, "status": report.status}


@shared_task(name="minis3.requeue_stuck", base=StoreTask, bind=True)
def requeue_stuck(self) -> list[str]:
    ids = maintenance.stuck_files(self.store)
    for file_id in ids:
        ingest.delay(file_id)
    if ids:
        log.info("re-queued %d stuck file(s)", len(ids))
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


@shared_task(name="minis3.heal", base=StoreTask, bind=True)
def heal(self, chunk_hash: str) -> dict:
    from pipeline.heal import heal_chunk

    result = heal_chunk(self.store, chunk_hash)
    monitoring.observe_heal(result)
    log.info("heal %s: %s rebuilt=%s quarantined=%s %s", chunk_hash, result.status, result.rebuilt,
             result.quarantined, result.reason)
    return {"chunk": chunk_hash, "status": result.status, "rebuilt": result.rebuilt}


@shared_task(name="minis3.heal_flagged", base=StoreTask, bind=True)
def heal_flagged(self) -> dict:
    """Chunks flagged for heal whose task was lost or could not finish (a node was down)."""
    from pipeline.heal import heal_all

    lock = self.store.redis.lock("minis3:heal:lock", timeout=600, blocking=False, thread_local=False)
    if not lock.acquire(blocking=False):
        return {"skipped": True}
    try:
        report = heal_all(self.store, full_scan=False)
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
    from pipeline import scrub as scrubbing

    budget = budget_s if budget_s is not None else scrub_slice_s(self.store.settings) * 0.8
    lock = self.store.redis.lock(scrubbing.LOCK, timeout=max(60, budget * 4), blocking=False, thread_local=False)
    if not lock.acquire(blocking=False):
        return {"skipped": True}
    try:
        report = scrubbing.run_slice(self.store, budget_s=budget)
    finally:
        try:
            lock.release()
        except Exception:
            pass
    monitoring.observe_scrub(report)
    return report.to_json()


@shared_task(name="minis3.ec_convert", base=StoreTask, bind=True)
def ec_convert(self) -> dict:
    from pipeline.nodes import convert_all

    return convert_all(self.store).to_json()


@shared_task(name="minis3.drain", base=StoreTask, bind=True)
def drain(self, node: str) -> dict:
    from pipeline.nodes import drain_node

    return drain_node(self.store, node).to_json()


def scrub_slice_s(settings) -> float:
    """How often beat runs a slice of the scrub (each slice reads for most of that time)."""
    return max(1.0, min(60.0, settings.scrub_period_s / 10))
