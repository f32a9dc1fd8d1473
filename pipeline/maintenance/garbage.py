"""Periodic jobs: garbage collection of unreferenced chunks, stuck files, abandoned spool.

GC protocol (restic-like: plan, then execute; delete in the reverse order of writing).
A manifest page names every chunk of its file from the moment the upload is spooled until the
file is deleted, and every ingest reads or claims its chunks only after its manifest exists.
``lastRef`` says when a chunk was last referenced: a delete stamps it just before the manifest
goes, so that the grace period counts from then; ingest and GC refresh it on chunks in use (a
stamp younger than ``pipeline.metadata.chunks.TOUCH_REFRESH_S`` is left as it is).

For each candidate (``lastRef`` older than the grace period, no manifest names it) GC
1. takes the chunk with a compare-and-set on ``(state, lastRef < cutoff)`` that moves it to
   ``deleting``; a chunk stamped since the plan makes this fail;
2. looks for a manifest naming it again: one that appeared after the plan (an upload of the same
   content) gives the chunk back in its old state;
3. deletes the chunk file, then the chunk document.
An ingest that reads the chunk after step 1 sees ``deleting`` (or no document) and retries
later (``ChunkBusy``) or claims it anew and writes it from its own spool. One that read it as
stored before step 1 wrote its manifest before that read, so step 2 finds the manifest and gives
the chunk back: the manifest, not the ingest's stamp, is what keeps a deduplicated chunk (the
ingest still checks that its chunks are stored after its read, and retries while GC holds one).
So GC never deletes a chunk that a manifest names when it deletes it, and every ingest either
finds its chunks stored under a manifest that GC will see, or writes them again.

One GC runs at a time: a Redis lock that expires after ``gc_lock_ttl_s`` unless the run renews
it. A GC killed between steps leaves ``deleting`` documents; a run after the lock expired finishes
them (or gives them back).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import redis
from redis.exceptions import LockError

from config.settings import Settings
from pipeline.maintenance.progress import Progress, ProgressCallback
from pipeline.metadata.chunks import ChunkRepository
from pipeline.metadata.files import FileRepository
from pipeline.metadata.model import CHUNK_STORED, DELETED, PROCESSING, QUEUED
from pipeline.metadata.operations import OperationsRepository
from pipeline.storage.chunkio import ChunkIO, nodes_of
from pipeline.storage.chunkstore import ChunkStore, Spool

log = logging.getLogger(__name__)

GC_LOCK = "minis3:gc:lock"
RENEW_EVERY = 50  # chunk deletions between renewals of the lock (MINIS3_GC_LOCK_TTL_S)
GC_BATCH = 500
SAMPLE = 100  # chunks listed in a report
MANIFEST_BATCH = 500


class GcLockLost(Exception):
    """The GC lock expired while this run held it; another run may have started."""


@dataclass
class GcReport:
    dry_run: bool
    chunks: int = 0
    bytes: int = 0
    still_referenced: int = 0
    given_back: int = 0
    skipped_locked: bool = False
    temporaries: int = 0  # unfinished chunk-file writes removed
    deleted: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, doc: dict) -> None:
        self.chunks += 1
        self.bytes += doc.get("size", 0)
        if len(self.deleted) < SAMPLE:
            self.deleted.append({"chunk": doc["_id"], "node": ",".join(nodes_of(doc)), "size": doc.get("size", 0)})

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class GarbageCollector:
    """GC of unreferenced chunks, stuck files and abandoned spool directories."""

    files: FileRepository
    chunks: ChunkRepository
    operations: OperationsRepository
    chunkio: ChunkIO
    nodes: ChunkStore
    spool: Spool
    redis: redis.Redis
    settings: Settings

    def collect(self, dry_run: bool = False, now: float | None = None,
                progress: ProgressCallback | None = None) -> dict:
        """Delete chunks unreferenced for longer than the grace period; one run at a time.

        A dry run takes no lock and changes nothing: it reports what a run would delete now.
        ``progress(done, None)`` follows the candidate chunks looked at.
        """
        now = time.time() if now is None else now
        done = Progress(progress)
        if dry_run:
            report = self._collect(True, now, renew=lambda: None, done=done)
        else:
            lock = self.redis.lock(GC_LOCK, timeout=self.settings.gc_lock_ttl_s, blocking=False,
                                   thread_local=False)
            if not lock.acquire(blocking=False):
                log.info("gc: another run holds the lock; skipped")
                return GcReport(dry_run, skipped_locked=True).to_json()
            try:
                report = self._collect(False, now, renew=lambda: _renew(lock), done=done)
                # fragment writes a killed worker left half done (never named by a document)
                report.temporaries = self.nodes.sweep_temporaries(now - self.settings.gc_grace_s)
            finally:
                try:
                    lock.release()
                except LockError:  # expired: another GC may run now, which the protocol allows
                    pass
            self.operations.record_event("gc", {"chunks": report.chunks, "bytes": report.bytes,
                                                "seconds": round(report.seconds, 3),
                                                "stillReferenced": report.still_referenced,
                                                "givenBack": report.given_back,
                                                "cutoff": now - self.settings.gc_grace_s})
        log.info("gc%s: %d chunk(s), %d byte(s) %s", " (dry run)" if dry_run else "", report.chunks,
                 report.bytes, "would be freed" if dry_run else "freed")
        return report.to_json()

    def _collect(self, dry_run: bool, now: float, renew, done: Progress) -> GcReport:
        started = time.monotonic()
        report = GcReport(dry_run)
        cutoff = now - self.settings.gc_grace_s
        self._finish_interrupted(report, now)
        after = None
        while True:
            renew()
            batch = self.chunks.gc_candidates(cutoff, GC_BATCH, after)
            if not batch:
                break
            after = batch[-1]["_id"]
            referenced = self.files.referenced_hashes([d["_id"] for d in batch])
            report.still_referenced += len(referenced)
            if referenced and not dry_run:
                self.chunks.touch_chunks(sorted(referenced))  # out of the next runs' candidates for a while
            for doc in batch:
                if doc["_id"] in referenced:
                    continue
                if dry_run:
                    report.add(doc)
                    continue
                if (report.chunks + report.given_back) % RENEW_EVERY == RENEW_EVERY - 1:
                    renew()
                if self._delete_chunk(doc, cutoff):
                    report.add(doc)
                else:
                    report.given_back += 1
            done.advance(len(batch))
            if len(batch) < GC_BATCH:
                break
        report.seconds = time.monotonic() - started
        return report

    def _delete_chunk(self, doc: dict, cutoff: float) -> bool:
        h = doc["_id"]
        if not self.chunks.begin_chunk_delete(h, cutoff, doc["state"]):
            return False  # an ingest stamped it since the plan
        if self.files.referenced_hashes([h]):
            self.chunks.cancel_chunk_delete(h, doc["state"])  # a manifest appeared since the plan
            return False
        self.chunkio.delete(doc)
        self.chunks.finish_chunk_delete(h)
        return True

    def _finish_interrupted(self, report: GcReport, now: float) -> None:
        """Chunks a killed GC left ``deleting``: delete them, or give back those named again."""
        for doc in self.chunks.chunks_being_deleted(since_before=now - self.settings.gc_lock_ttl_s):
            h = doc["_id"]
            if self.files.referenced_hashes([h]) and self.chunkio.is_placed(doc):
                if not report.dry_run:
                    self.chunks.cancel_chunk_delete(h, doc.get("prevState") or CHUNK_STORED)
                report.given_back += 1
                continue
            if not report.dry_run:
                self.chunkio.delete(doc)
                self.chunks.finish_chunk_delete(h)
            report.add(doc)

    def stuck_files(self, now: float | None = None) -> list[str]:
        """Files left queued or processing with no progress for ``stuck_after_s``; stamped, so each
        is re-queued once per period."""
        now = time.time() if now is None else now
        stuck = self.files.files_in_states((QUEUED, PROCESSING), now - self.settings.stuck_after_s)
        for f in stuck:
            self.files.touch_file(f.id)
        return [f.id for f in stuck]

    def clean_spool(self, now: float | None = None) -> list[str]:
        """Remove spool directories that no live upload or pending ingest needs, and release the
        manifests that no live file owns (uploads that died, deletes that were interrupted)."""
        now = time.time() if now is None else now
        removed = []
        entries = [(file_id, mtime) for file_id, mtime in self.spool.entries()
                   if now - mtime >= self.settings.spool_abandon_s]
        for i in range(0, len(entries), MANIFEST_BATCH):
            batch = entries[i:i + MANIFEST_BATCH]
            states = self.files.file_states([file_id for file_id, _ in batch])
            for file_id, _ in batch:
                if states.get(file_id) in (QUEUED, PROCESSING):
                    continue
                self.spool.remove(file_id)
                removed.append(file_id)
        self.release_stale_manifests()
        return removed

    def release_stale_manifests(self) -> list[str]:
        """Release manifests of deleted files and of uploads that never became a file.

        Spool first, then the file: an upload creates its spool before its manifest and its file
        document before its spool goes, so a manifest with neither belongs to no live upload.
        """
        released = []
        ids = self.files.manifest_file_ids()
        for i in range(0, len(ids), MANIFEST_BATCH):
            batch = ids[i:i + MANIFEST_BATCH]
            unspooled = {file_id for file_id in batch if not self.spool.exists(file_id)}
            states = self.files.file_states(batch)
            for file_id in batch:
                status = states.get(file_id)
                if status == DELETED or (status is None and file_id in unspooled):
                    self.files.release_manifest(file_id)
                    released.append(file_id)
        return released


def _renew(lock) -> None:
    try:
        lock.reacquire()
    except LockError as exc:
        raise GcLockLost() from exc
