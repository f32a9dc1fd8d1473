"""Periodic jobs: garbage collection of unreferenced chunks, stuck files, abandoned spool.

GC protocol (restic-like: plan, then execute). A chunk may go only when no manifest names it
and nobody referenced it for ``gc_grace_s``. Ingest stamps ``lastRef`` with a compare-and-set
on ``state == stored``; GC takes a chunk with a compare-and-set on ``lastRef < cutoff`` that
moves it to ``deleting``. Whichever comes second sees the other's write and backs off, so GC
never deletes a chunk that an ingest is about to reference.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

from pipeline.errors import InvalidId
from pipeline.metadata import PROCESSING, QUEUED, STORED

log = logging.getLogger(__name__)

GC_LOCK = "minis3:gc:lock"
GC_BATCH = 500


@dataclass
class GcReport:
    dry_run: bool
    chunks: int = 0
    bytes: int = 0
    still_referenced: int = 0
    skipped_locked: bool = False
    deleted: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        data = asdict(self)
        data["deleted"] = data["deleted"][:100]
        return data


def collect_garbage(store, dry_run: bool = False, now: float | None = None) -> dict:
    """Delete chunks unreferenced for longer than the grace period; one run at a time."""
    lock = store.redis.lock(GC_LOCK, timeout=3600, blocking=False)
    if not lock.acquire(blocking=False):
        return GcReport(dry_run, skipped_locked=True).to_json()
    try:
        report = _collect(store, dry_run, time.time() if now is None else now)
    finally:
        try:
            lock.release()
        except Exception:  # expired: another GC may run now, which is safe
            pass
    if not dry_run:
        store.repo.record_event("gc", {"chunks": report.chunks, "bytes": report.bytes,
                                       "seconds": report.seconds})
    log.info("gc%s: %d chunk(s), %d byte(s) %s", " (dry run)" if dry_run else "", report.chunks,
             report.bytes, "would be freed" if dry_run else "freed")
    return report.to_json()


def _collect(store, dry_run: bool, now: float) -> GcReport:
    started = time.monotonic()
    repo, chunks = store.repo, store.chunks
    report = GcReport(dry_run)
    cutoff = now - store.settings.gc_grace_s
    if not dry_run:
        for doc in repo.chunks_being_deleted():  # finish what a crashed GC started
            chunks.delete(doc["node"], doc["_id"])
            repo.finish_chunk_delete(doc["_id"])
    seen: set[str] = set()
    while True:
        batch = [d for d in repo.gc_candidates(cutoff, GC_BATCH + len(seen)) if d["_id"] not in seen]
        if not batch:
            break
        seen.update(d["_id"] for d in batch)
        referenced = repo.referenced_hashes([d["_id"] for d in batch])
        if referenced and not dry_run:
            repo.touch_chunks(sorted(referenced))
        report.still_referenced += len(referenced)
        for doc in batch:
            h = doc["_id"]
            if h in referenced:
                continue
            if dry_run:
                report.chunks += 1
                report.bytes += doc.get("size", 0)
                report.deleted.append(h)
                continue
            if not repo.begin_chunk_delete(h, cutoff):
                continue  # an ingest referenced it since we looked
            if repo.referenced_hashes([h]):
                # a manifest appeared between the plan and the claim: keep the chunk
                repo.chunks.update_one({"_id": h}, {"$set": {"state": STORED, "lastRef": time.time()}})
                continue
            chunks.delete(doc["node"], h)
            repo.finish_chunk_delete(h)
            report.chunks += 1
            report.bytes += doc.get("size", 0)
            report.deleted.append(h)
        if len(batch) < GC_BATCH:
            break
    report.seconds = time.monotonic() - started
    return report


def stuck_files(store, now: float | None = None) -> list[str]:
    """Files left queued or processing with no progress for ``stuck_after_s``; stamped, so each
    is re-queued once per period."""
    now = time.time() if now is None else now
    stuck = store.repo.files_in_states((QUEUED, PROCESSING), now - store.settings.stuck_after_s)
    for f in stuck:
        store.repo.touch_file(f.id)
    return [f.id for f in stuck]


def clean_spool(store, now: float | None = None) -> list[str]:
    """Remove spool directories that no live upload or pending ingest needs, and the manifest
    pages of uploads that never became a file."""
    now = time.time() if now is None else now
    removed = []
    for file_id, mtime in store.spool.entries():
        if now - mtime < store.settings.spool_abandon_s:
            continue
        try:
            f = store.repo.get_file(file_id)
        except InvalidId:
            f = None
        if f is not None and f.status in (QUEUED, PROCESSING):
            continue
        store.spool.remove(file_id)
        removed.append(file_id)
    for file_id in store.repo.manifest_file_ids():
        # spool first, then the file: an upload creates its spool before its manifest and its
        # file document before the spool goes, so this order never drops a live manifest
        if not store.spool.exists(file_id) and not store.repo.file_exists(file_id):
            store.repo.delete_manifest(file_id)
    return removed

