"""What the worker processes report: Prometheus series for ingest and GC, and the request id
of the upload being ingested on every log line of that task.

The series go to ``PROMETHEUS_MULTIPROC_DIR`` (set by ``workers.app`` before this module is
imported) and are served, added up with the web's, by the web's ``GET /metrics``.
"""
from __future__ import annotations

from celery.signals import task_postrun, task_prerun
from prometheus_client import Counter, Histogram

from config.logging import REQUEST_ID

INGEST_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

INGESTS = Counter("minis3_ingests_total", "Ingest task runs by the file's resulting status", ["status"])
INGEST_SECONDS = Histogram("minis3_ingest_duration_seconds", "Worker time of one ingest",
                           buckets=INGEST_BUCKETS)
INGEST_CHUNKS = Counter("minis3_ingest_chunks_total",
                        "Chunks handled by ingest: stored (new on a node) or deduplicated (already held)",
                        ["result"])
INGEST_BYTES = Counter("minis3_ingest_bytes_written_total", "Chunk bytes ingest placed on nodes")
GC_CHUNKS = Counter("minis3_gc_deleted_chunks_total", "Chunks deleted by garbage collection")
GC_BYTES = Counter("minis3_gc_deleted_bytes_total", "Bytes freed by garbage collection")

for _result in ("stored", "deduplicated"):
    INGEST_CHUNKS.labels(_result)


def observe_ingest(report, seconds: float) -> None:
    INGESTS.labels(report.status).inc()
    INGEST_SECONDS.observe(seconds)
    INGEST_CHUNKS.labels("stored").inc(report.new_chunks)
    INGEST_CHUNKS.labels("deduplicated").inc(report.deduplicated)
    INGEST_BYTES.inc(report.bytes_written)


def observe_gc(report: dict) -> None:
    if not report.get("dry_run"):
        GC_CHUNKS.inc(report.get("chunks", 0))
        GC_BYTES.inc(report.get("bytes", 0))


@task_prerun.connect
def _bind_request_id(task_id=None, task=None, args=None, kwargs=None, **_):
    REQUEST_ID.set((kwargs or {}).get("request_id") or "-")


@task_postrun.connect
def _unbind_request_id(**_):
    REQUEST_ID.set("-")
