"""fsck: check that files, manifests, chunk documents and node directories agree; repair.

Findings:
- missing: a chunk that a file needs is in no place (no document, or no file of the right size
  on its node; for a file not yet stored, not in its spool either);
- corrupt: a chunk file whose content does not hash to its name, or has the wrong size;
- unknown: a file under a node that no chunk document claims (a stray or a leftover temporary);
- unreferenced: a chunk document that no manifest names (GC deletes it after the grace period);
- stuck: a file queued or processing with no progress for ``stuck_after_s``.

Repairs never destroy bytes that a file might need: corrupt chunks move to the node's quarantine
directory; unknown files go only when older than the GC grace period and still unclaimed; stuck
files are re-queued; files whose chunks are lost are marked ``failed`` with the missing list.
Unreferenced chunks are left to GC. The store is clean when every finding count is 0.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from pipeline.chunkio import nodes_of
from pipeline.metadata import CHUNK_DELETING, PROCESSING, QUEUED, STORED, FileDoc
from pipeline.progress import Progress, ProgressCallback

BATCH = 500
SAMPLE = 1000  # findings listed per kind; the counts are exact


@dataclass
class Findings:
    count: int = 0
    sample: list[dict] = field(default_factory=list)

    def add(self, **item) -> None:
        self.count += 1
        if len(self.sample) < SAMPLE:
            self.sample.append(item)


@dataclass
class FsckReport:
    repair: bool
    missing: Findings = field(default_factory=Findings)
    corrupt: Findings = field(default_factory=Findings)
    unknown: Findings = field(default_factory=Findings)
    unreferenced: Findings = field(default_factory=Findings)
    stuck: Findings = field(default_factory=Findings)
    files_checked: int = 0
    chunk_files_checked: int = 0
    bytes_checked: int = 0
    repaired: dict = field(default_factory=lambda: {"quarantined": 0, "removed": 0, "requeued": 0,
                                                    "failed": 0})
    seconds: float = 0.0

    KINDS = ("missing", "corrupt", "unknown", "unreferenced", "stuck")

    @property
    def problems(self) -> int:
        return sum(getattr(self, kind).count for kind in self.KINDS)

    @property
    def clean(self) -> bool:
        return self.problems == 0

    def to_json(self) -> dict:
        out = {kind: {"count": getattr(self, kind).count, "sample": getattr(self, kind).sample}
               for kind in self.KINDS}
        out.update(clean=self.clean, problems=self.problems, filesChecked=self.files_checked,
                   chunkFilesChecked=self.chunk_files_checked, bytesChecked=self.bytes_checked,
                   repair=self.repair, repaired=self.repaired, seconds=round(self.seconds, 3))
        return out

    def lines(self) -> Iterator[str]:
        for item in self.missing.sample:
            yield f"missing       chunk {item['chunk']} of file {item['file']} ({item['reason']})"
        for item in self.corrupt.sample:
            yield f"corrupt       chunk {item['chunk']} on {item['node']}: {item['reason']}"
        for item in self.unknown.sample:
            yield f"unknown       {item['path']} on {item['node']} ({item['size']} bytes, {item['ageSeconds']}s old)"
        for item in self.unreferenced.sample:
            yield f"unreferenced  chunk {item['chunk']} on {item['node']} ({item['size']} bytes; GC deletes it " \
                  f"after the grace period)"
        for item in self.stuck.sample:
            yield f"stuck         file {item['file']} {item['status']} for {item['idleSeconds']}s"
        counts = ", ".join(f"{getattr(self, k).count} {k}" for k in self.KINDS)
        yield (f"fsck: {self.files_checked} stored file(s), {self.chunk_files_checked} chunk file(s) "
               f"({self.bytes_checked} bytes) checked: {'clean' if self.clean else counts}")
        if self.repair:
            yield "repaired: " + ", ".join(f"{n} {what}" for what, n in self.repaired.items())


def run_fsck(store, repair: bool = False, enqueue: Callable[[str], None] | None = None,
             now: float | None = None, progress: ProgressCallback | None = None) -> FsckReport:
    """Check everything (and repair with ``repair``); ``enqueue(file_id)`` re-queues an ingest.

    ``progress(done, None)`` follows the items looked at: chunk files, files, chunk documents.
    """
    started = time.monotonic()
    now = time.time() if now is None else now
    report = FsckReport(repair)
    done = Progress(progress)
    _check_nodes(store, report, now, done)  # first: a quarantined chunk then counts as missing below
    _check_stored_files(store, report, done)
    _check_stuck_files(store, report, now, enqueue, done)
    _check_unreferenced(store, report, now, done)
    report.seconds = time.monotonic() - started
    return report


def _batches(items: Iterable, size: int = BATCH) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- node directories: corrupt and unknown files ----------------------------------------------

def _check_nodes(store, report: FsckReport, now: float, done: Progress) -> None:
    grace = store.settings.gc_grace_s
    for entries in _batches(store.chunks.iter_all()):
        docs = store.repo.chunk_docs(e.chunk_hash for e in entries)
        for entry in entries:
            doc = docs.get(entry.chunk_hash)
            if doc is None or entry.node not in nodes_of(doc) or not store.chunks.is_chunk_file(entry):
                age = now - entry.mtime
                report.unknown.add(node=entry.node, path=str(entry.path), size=entry.size, ageSeconds=int(age))
                if report.repair and age > grace and store.chunks.discard_stray(
                        entry, lambda e=entry: _claimed(store, e.chunk_hash, e.node)):
                    report.repaired["removed"] += 1
                continue
            if doc["state"] == CHUNK_DELETING:
                continue  # GC is deleting it
            try:
                digest = store.chunks.sha256(entry)
            except FileNotFoundError:
                continue  # deleted since the listing
            report.chunk_files_checked += 1
            report.bytes_checked += entry.size
            if entry.size == doc["size"] and digest == entry.chunk_hash:
                continue
            reason = f"{entry.size} bytes, expected {doc['size']}" if entry.size != doc["size"] \
                else f"content hashes to {digest}"
            report.corrupt.add(chunk=entry.chunk_hash, node=entry.node, path=str(entry.path), reason=reason)
            if report.repair and store.chunks.quarantine(entry.node, entry.chunk_hash):
                report.repaired["quarantined"] += 1
        done.advance(len(entries))


def _claimed(store, chunk_hash: str, node: str) -> bool:
    doc = store.repo.chunk_docs([chunk_hash]).get(chunk_hash)
    return doc is not None and node in nodes_of(doc)


# --- files: chunks lost, files stuck ---------------------------------------------------------

def _lost_chunks(store, f: FileDoc, spooled_counts: bool) -> list[tuple[str, str]]:
    """(chunk, reason) for each distinct chunk of ``f`` found nowhere.

    With ``spooled_counts`` (a file not yet stored) a chunk still in the spool is not lost. The
    spool is looked at before the chunk documents: ingest moves a chunk to its node only after
    claiming its document, so a chunk that leaves the spool meanwhile is found on its node.
    """
    lost: dict[str, str] = {}
    covered = 0
    for page in store.repo.iter_manifest(f.id):
        covered = page.first_index + len(page.hashes)
        wanted = [h for offset, h in enumerate(page.hashes)
                  if not (spooled_counts and store.spool.chunk_path(f.id, page.first_index + offset).exists())]
        docs = store.repo.chunk_docs(wanted)
        for h in wanted:
            doc = docs.get(h)
            if doc is None:
                lost.setdefault(h, "no chunk document")
            elif not store.chunkio.is_placed(doc):
                lost.setdefault(h, f"no chunk file of {doc.get('size')} bytes on {','.join(nodes_of(doc))}")
    if covered != f.chunk_count:
        lost.setdefault("-", f"manifest lists {covered} of {f.chunk_count} chunks")
    return list(lost.items())


def _record_lost(store, report: FsckReport, f: FileDoc, lost: list[tuple[str, str]]) -> None:
    for h, reason in lost:
        report.missing.add(file=f.id, chunk=h, reason=reason)
    if report.repair and store.repo.mark_failed(f.id, f"{len(lost)} chunk(s) lost (fsck)",
                                                [h for h, _ in lost if h != "-"]):
        report.repaired["failed"] += 1


def _check_stored_files(store, report: FsckReport, done: Progress) -> None:
    for f in store.repo.iter_files((STORED,)):
        done.advance()
        report.files_checked += 1
        lost = _lost_chunks(store, f, spooled_counts=False)
        if not lost:
            continue
        current = store.repo.get_file(f.id)
        if current is None or current.status != STORED:
            continue  # deleted while we looked: its manifest went with it
        _record_lost(store, report, f, lost)


def _check_stuck_files(store, report: FsckReport, now: float, enqueue: Callable[[str], None] | None,
                       done: Progress) -> None:
    for f in store.repo.files_in_states((QUEUED, PROCESSING), now - store.settings.stuck_after_s):
        done.advance()
        report.stuck.add(file=f.id, status=f.status, idleSeconds=int(now - f.updated))
        lost = _lost_chunks(store, f, spooled_counts=True)
        if lost:
            _record_lost(store, report, f, lost)
        elif report.repair and enqueue is not None:
            store.repo.touch_file(f.id)
            enqueue(f.id)
            report.repaired["requeued"] += 1


# --- chunk documents no manifest names ----------------------------------------------------------

def _check_unreferenced(store, report: FsckReport, now: float, done: Progress) -> None:
    live = (d for d in store.repo.all_chunks() if d.get("state") != CHUNK_DELETING)
    for docs in _batches(live):
        done.advance(len(docs))
        referenced = store.repo.referenced_hashes([d["_id"] for d in docs])
        for d in docs:
            if d["_id"] not in referenced:
                report.unreferenced.add(chunk=d["_id"], node=",".join(nodes_of(d)), size=d.get("size", 0),
                                        idleSeconds=int(now - d.get("lastRef", now)))
