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

FRAGMENTS_HEALED = Counter("minis3_fragments_healed_total", "Fragments rebuilt by heal")
HEALS = Counter("minis3_heals_total", "Chunks looked at by heal, by outcome", ["status"])
SCRUB_BYTES = Counter("minis3_scrub_bytes_total", "Fragment bytes read and verified by scrub")
SCRUB_CHUNKS = Counter("minis3_scrub_chunks_total", "Chunks read and verified by scrub")
SCRUB_FINDINGS = Counter("minis3_scrub_findings_total", "Fragments scrub found damaged", ["kind"])
DEGRADED_STORED = Counter("minis3_ingest_degraded_chunks_total",
                          "Chunks ingest stored with fragments missing (queued for heal)")

for _kind in ("corrupt", "missing"):
    SCRUB_FINDINGS.labels(_kind)

for _result in ("stored", "deduplicated"):
    INGEST_CHUNKS.labels(_result)


def observe_ingest(report, seconds: float) -> None:
    INGESTS.labels(report.status).inc()
    INGEST_SECONDS.observe(seconds)
    INGEST_CHUNKS.labels("stored").inc(report.new_chunks)
    INGEST_CHUNKS.labels("deduplicated").inc(report.deduplicated)
    INGEST_BYTES.inc(report.bytes_written)
    DEGRADED_STORED.inc(getattr(report, "degraded", 0))


def observe_heal(result) -> None:
    HEALS.labels(result.status).inc()
    FRAGMENTS_HEALED.inc(len(result.rebuilt))


def observe_heal_report(report) -> None:
    FRAGMENTS_HEALED.inc(report.fragments_rebuilt)
    for status in ("healthy", "healed", "partial", "lost", "blocked"):
        if getattr(report, status):
            HEALS.labels(status).inc(getattr(report, status))


def observe_scrub(report) -> None:
    SCRUB_BYTES.inc(report.bytes)
    SCRUB_CHUNKS.inc(report.chunks)
    SCRUB_FINDINGS.labels("corrupt").inc(report.corrupt)
    SCRUB_FINDINGS.labels("missing").inc(report.missing)


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
