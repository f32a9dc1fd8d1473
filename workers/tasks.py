"""Tasks take ids, never bytes, and call the pipeline."""
from __future__ import annotations

import logging
import time

from celery import shared_task

from pipeline import maintenance, usage
from workers import monitoring
from workers.base import StoreTask
from workers.celery import INGEST_QUEUE

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


@shared_task(name="minis3.sample", base=StoreTask, bind=True)
def sample(self) -> dict:
    """The store's figures now (queue depth, throughput, bytes) and each tenant's usage."""
    figures = usage.take_sample(self.store, INGEST_QUEUE)
    usage.refresh_usage(self.store.repo)
    return {"queueDepth": figures["queueDepth"], "storedBytes": figures["storedBytes"]}
