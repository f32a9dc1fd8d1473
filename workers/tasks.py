"""Tasks take ids, never bytes, and call the pipeline."""
from __future__ import annotations

import logging
import time

from celery import shared_task

from pipeline import maintenance
from pipeline.objects import ObjectNames
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


@shared_task(name="minis3.abort_abandoned_uploads", base=StoreTask, bind=True)
def abort_abandoned_uploads(self) -> int:
    """Abort multipart uploads nobody touched for MINIS3_MULTIPART_ABANDON_S; their parts' chunks
    come back through GC."""
    aborted = ObjectNames(self.store).abort_abandoned(self.store.settings.multipart_abandon_s)
    if aborted:
        log.info("aborted %d abandoned multipart upload(s)", aborted)
    return aborted
