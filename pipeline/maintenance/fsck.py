"""fsck: check that files, manifests, chunk documents and node directories agree; repair.

Findings:
- missing: a chunk that a file needs is in no place (no document, or fewer fragment files of the
  right size on their nodes than it takes to read it; for a file not yet stored, not in its spool
  either);
- corrupt: a chunk file whose content does not hash to its name (a whole copy) or to the checksum
  its document records (a fragment), or has the wrong size;
- unknown: a file under a node that no chunk document claims (a stray, a fragment on a node its
  document does not name, or a temporary older than the GC grace period);
- under-replicated: an erasure-coded chunk still readable but missing fragments;
- unreferenced: a chunk document that no manifest names (GC deletes it after the grace period);
- stuck: a file queued or processing with no progress for ``stuck_after_s``.

Repairs never destroy bytes that a file might need: corrupt chunks move to the node's quarantine
directory; under-replicated chunks (and those with a corrupt fragment) are healed while enough
fragments remain; unknown files go only when older than the GC grace period and still unclaimed;
stuck files are re-queued; files whose chunks are lost are marked ``failed`` with the missing list.
Unreferenced chunks are left to GC. The store is clean when every finding count is 0.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from config.settings import Settings
from pipeline.maintenance.heal import HEALED, HEALTHY, Healer, batches
from pipeline.maintenance.progress import Progress, ProgressCallback
from pipeline.metadata.chunks import ChunkRepository
from pipeline.metadata.files import FileRepository
from pipeline.metadata.model import CHUNK_DELETING, PROCESSING, QUEUED, STORED, FileDoc
from pipeline.metadata.model import CHUNK_STORED as STORED_CHUNK
from pipeline.storage.chunkio import ChunkIO, fragment_name, fragments, layout, nodes_of
from pipeline.storage.chunkstore import ChunkStore, Spool, parse_name

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
    under_replicated: Findings = field(default_factory=Findings)
    files_checked: int = 0
    chunk_files_checked: int = 0
    bytes_checked: int = 0
    repaired: dict = field(default_factory=lambda: {"quarantined": 0, "removed": 0, "requeued": 0,
                                                    "failed": 0, "healed": 0})
    seconds: float = 0.0

    KINDS = ("missing", "corrupt", "unknown", "unreferenced", "stuck", "under_replicated")

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
        for item in self.under_replicated.sample:
            yield (f"under-replicated chunk {item['chunk']}: {item['present']} of {item['fragments']} fragments "
                   f"on their nodes{' (healed)' if item.get('healed') else ''}")
        counts = ", ".join(f"{getattr(self, k).count} {k}" for k in self.KINDS)
        yield (f"fsck: {self.files_checked} stored file(s), {self.chunk_files_checked} chunk file(s) "
               f"({self.bytes_checked} bytes) checked: {'clean' if self.clean else counts}")
        if self.repair:
            yield "repaired: " + ", ".join(f"{n} {what}" for what, n in self.repaired.items())


def _named_fragment(doc: dict, node: str, name: str) -> dict | None:
    """The fragment of ``doc`` that the file ``name`` on ``node`` is, if the document names it."""
    k, m = layout(doc)
    return next((f for f in fragments(doc)
                 if f.get("node") == node and fragment_name(doc["_id"], f["i"], k, m) == name), None)


@dataclass
class Fsck:
    """The check of files, manifests, chunk documents and node directories against each other."""

    files: FileRepository
    chunks: ChunkRepository
    nodes: ChunkStore
    chunkio: ChunkIO
    spool: Spool
    healer: Healer
    settings: Settings

    def run(self, repair: bool = False, enqueue: Callable[[str], None] | None = None,
            now: float | None = None, progress: ProgressCallback | None = None) -> FsckReport:
        """Check everything (and repair with ``repair``); ``enqueue(file_id)`` re-queues an ingest.

        ``progress(done, None)`` follows the items looked at: chunk files, files, chunk documents.
        """
        started = time.monotonic()
        now = time.time() if now is None else now
        report = FsckReport(repair)
        to_heal: set[str] = set()
        done = Progress(progress)
        self._check_nodes(report, now, to_heal, done)  # first: a quarantined chunk then counts as missing below
        self._check_stored_files(report, to_heal, done)
        self._check_stuck_files(report, now, enqueue, done)
        self._check_unreferenced(report, now, done)
        self._check_held(report, now)
        report.seconds = time.monotonic() - started
        return report

    # --- node directories: corrupt and unknown files -----------------------------------------

    def _check_nodes(self, report: FsckReport, now: float, to_heal: set[str], done: Progress) -> None:
        grace = self.settings.gc_grace_s
        for entries in batches(self.nodes.iter_all(), BATCH):
            names = {e.chunk_hash: parse_name(e.chunk_hash) for e in entries}
            docs = self.chunks.chunk_docs(p[0] for p in names.values() if p is not None)
            for entry in entries:
                parsed = names[entry.chunk_hash]
                doc = docs.get(parsed[0]) if parsed else None
                frag = _named_fragment(doc, entry.node, entry.chunk_hash) if doc is not None else None
                if frag is None or not self.nodes.is_chunk_file(entry):
                    age = now - entry.mtime
                    report.unknown.add(node=entry.node, path=str(entry.path), size=entry.size, ageSeconds=int(age))
                    if report.repair and age > grace and self.nodes.discard_stray(
                            entry, lambda e=entry: self._claimed(e.chunk_hash, e.node)):
                        report.repaired["removed"] += 1
                    continue
                if doc["state"] == CHUNK_DELETING:
                    continue  # GC is deleting it
                try:
                    reason = self.chunkio.audit(doc, frag, entry)
                except FileNotFoundError:
                    continue  # deleted since the listing
                report.chunk_files_checked += 1
                report.bytes_checked += entry.size
                if reason is None:
                    continue
                report.corrupt.add(chunk=entry.chunk_hash, node=entry.node, path=str(entry.path), reason=reason)
                if report.repair and self.chunkio.quarantine(doc, frag):
                    report.repaired["quarantined"] += 1
                    if self.chunkio.layout_of(doc).redundant:
                        to_heal.add(parsed[0])
            done.advance(len(entries))
        for node in self.nodes.node_ids:
            for entry in self.nodes.temporaries(node):
                age = now - entry.mtime
                if age <= grace:
                    continue
                report.unknown.add(node=node, path=str(entry.path), size=entry.size, ageSeconds=int(age))
                if report.repair:
                    entry.path.unlink(missing_ok=True)
                    report.repaired["removed"] += 1

    def _claimed(self, name: str, node: str) -> bool:
        parsed = parse_name(name)
        if parsed is None:
            return False
        doc = self.chunks.chunk_docs([parsed[0]]).get(parsed[0])
        return doc is not None and _named_fragment(doc, node, name) is not None

    # --- files: chunks lost, files stuck ----------------------------------------------------

    def _lost_chunks(self, f: FileDoc, spooled_counts: bool,
                     degraded: dict[str, tuple[int, int]] | None = None) -> list[tuple[str, str]]:
        """(chunk, reason) for each distinct chunk of ``f`` found nowhere.

        With ``spooled_counts`` (a file not yet stored) a chunk still in the spool is not lost. The
        spool is looked at before the chunk documents: ingest moves a chunk to its node only after
        claiming its document, so a chunk that leaves the spool meanwhile is found on its node.
        """
        lost: dict[str, str] = {}
        covered = 0
        for page in self.files.iter_manifest(f.id):
            covered = page.first_index + len(page.hashes)
            wanted = [h for offset, h in enumerate(page.hashes)
                      if not (spooled_counts and self.spool.chunk_path(f.id, page.first_index + offset).exists())]
            docs = self.chunks.chunk_docs(wanted)
            for h in wanted:
                doc = docs.get(h)
                if doc is None:
                    lost.setdefault(h, "no chunk document")
                elif not self.chunkio.is_placed(doc):
                    lay = self.chunkio.layout_of(doc)
                    present = len(lay.present(doc))
                    if not lay.redundant:
                        lost.setdefault(h, f"no chunk file of {doc.get('size')} bytes on {','.join(nodes_of(doc))}")
                    elif present < lay.k and not self.spool.is_held(h):  # a held spooled copy rebuilds it
                        lost.setdefault(h, f"{present} of the {lay.k} fragments needed on {','.join(nodes_of(doc))}")
                    elif degraded is not None:
                        degraded[h] = (present, lay.width)
        if covered != f.chunk_count:
            lost.setdefault("-", f"manifest lists {covered} of {f.chunk_count} chunks")
        return list(lost.items())

    def _record_lost(self, report: FsckReport, f: FileDoc, lost: list[tuple[str, str]]) -> None:
        for h, reason in lost:
            report.missing.add(file=f.id, chunk=h, reason=reason)
        if report.repair and self.files.mark_failed(f.id, f"{len(lost)} chunk(s) lost (fsck)",
                                                    [h for h, _ in lost if h != "-"]):
            report.repaired["failed"] += 1

    def _check_stored_files(self, report: FsckReport, to_heal: set[str], done: Progress) -> None:
        degraded: dict[str, tuple[int, int]] = {}
        for f in self.files.iter_files((STORED,)):
            done.advance()
            report.files_checked += 1
            lost = self._lost_chunks(f, spooled_counts=False, degraded=degraded)
            if lost and report.repair:  # heal what can be healed first: only the rest is lost
                lost = [(h, why) for h, why in lost if not self._healed(h)]
            if not lost:
                continue
            current = self.files.get_file(f.id)
            if current is None or current.status != STORED:
                continue  # deleted while we looked: its manifest went with it
            self._record_lost(report, f, lost)
        self._heal_degraded(report, degraded, to_heal)

    def _healed(self, chunk_hash: str) -> bool:
        return chunk_hash != "-" and self.healer.heal_chunk(chunk_hash).status in (HEALED, HEALTHY)

    def _heal_degraded(self, report: FsckReport, degraded: dict[str, tuple[int, int]], to_heal: set[str]) -> None:
        """Report under-replicated chunks (each once); with repair, heal them and those whose corrupt
        fragment was just quarantined."""
        for h, (present, total) in sorted(degraded.items()):
            item = {"chunk": h, "present": present, "fragments": total}
            if report.repair:
                item["healed"] = self.healer.heal_chunk(h).status in (HEALED, HEALTHY)
                report.repaired["healed"] += int(item["healed"])
            report.under_replicated.add(**item)
        if report.repair:
            for h in sorted(to_heal - set(degraded)):
                report.repaired["healed"] += int(self.healer.heal_chunk(h).status in (HEALED, HEALTHY))

    def _check_stuck_files(self, report: FsckReport, now: float, enqueue: Callable[[str], None] | None,
                           done: Progress) -> None:
        for f in self.files.files_in_states((QUEUED, PROCESSING), now - self.settings.stuck_after_s):
            done.advance()
            report.stuck.add(file=f.id, status=f.status, idleSeconds=int(now - f.updated))
            lost = self._lost_chunks(f, spooled_counts=True)
            if lost:
                self._record_lost(report, f, lost)
            elif report.repair and enqueue is not None:
                self.files.touch_file(f.id)
                enqueue(f.id)
                report.repaired["requeued"] += 1

    # --- chunk documents no manifest names -------------------------------------------------

    def _check_unreferenced(self, report: FsckReport, now: float, done: Progress) -> None:
        live = (d for d in self.chunks.all_chunks() if d.get("state") != CHUNK_DELETING)
        for docs in batches(live, BATCH):
            done.advance(len(docs))
            referenced = self.files.referenced_hashes([d["_id"] for d in docs])
            for d in docs:
                if d["_id"] not in referenced:
                    report.unreferenced.add(chunk=d["_id"], node=",".join(nodes_of(d)), size=d.get("size", 0),
                                            idleSeconds=int(now - d.get("lastRef", now)))

    # --- held spooled copies ---------------------------------------------------------------

    def _check_held(self, report: FsckReport, now: float) -> None:
        """A spooled copy held for a chunk that is whole again, or has no document, is unknown: heal
        (and GC) release them; a crash in between leaves them. Repair releases those past the grace
        period (a held copy is linked before its chunk's document says stored)."""
        held = list(self.spool.held())
        for batch in batches(held, BATCH):
            docs = self.chunks.chunk_docs(h for h, _ in batch)
            for h, since in batch:
                doc = docs.get(h)
                if doc is not None and (doc.get("state") != STORED_CHUNK or not self.chunkio.is_placed(doc)):
                    continue  # still degraded (reported as under-replicated), or being written
                age = now - since
                path = self.spool.held_path(h)
                size = path.stat().st_size if path.exists() else 0
                report.unknown.add(node="spool", path=str(path), size=size, ageSeconds=int(age))
                if report.repair and age > self.settings.gc_grace_s and self.spool.release(h):
                    report.repaired["removed"] += 1
