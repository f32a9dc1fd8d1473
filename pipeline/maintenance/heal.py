"""Heal: rebuild the missing or corrupt fragments of erasure-coded chunks, and move fragments
between nodes (drain, rebalance) or chunks between layouts (convert) while the store serves.

Every change of a chunk's layout follows one order: read and verify what is there, write the new
fragment files (atomically, directories synced), then compare-and-set the chunk's document on
its ``fv``, then delete files the document no longer names. A run that loses the compare-and-set
(GC took the chunk, another heal or move got there first) removes the files it wrote that the
current document does not name and looks again; so every step is idempotent and a crash leaves
at worst a fragment file no document names (fsck reports it; its repair and GC remove it).

A rebuilt fragment goes to a node that is up, not full, not draining and holds no other fragment
of the chunk: its own node when that qualifies, otherwise the least loaded one. A corrupt fragment
goes to its node's quarantine, never deleted.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from config.settings import Settings
from pipeline.errors import NotEnoughFragments
from pipeline.maintenance.progress import TimedReport
from pipeline.metadata.chunks import ChunkRepository
from pipeline.metadata.model import CHUNK_STORED
from pipeline.metadata.operations import OperationsRepository
from pipeline.storage.chunkio import ChunkIO, Placed, fragments, layout, nodes_of
from pipeline.storage.chunkstore import Spool, fsync_dir
from pipeline.storage.placement import RoundRobinPlacement

log = logging.getLogger(__name__)

ATTEMPTS = 3  # compare-and-set races lost before a chunk is left for the next run

HEALTHY, HEALED, PARTIAL, LOST, BLOCKED, GONE, BUSY = (
    "healthy", "healed", "partial", "lost", "blocked", "gone", "busy")


@dataclass
class HealResult:
    chunk: str
    status: str
    rebuilt: list[int] = field(default_factory=list)
    quarantined: list[int] = field(default_factory=list)
    reason: str = ""


@dataclass
class HealReport(TimedReport):
    chunks_checked: int = 0
    healthy: int = 0
    healed: int = 0
    partial: int = 0
    lost: int = 0
    blocked: int = 0
    fragments_rebuilt: int = 0
    fragments_quarantined: int = 0
    problems: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, result: HealResult) -> None:
        self.chunks_checked += 1
        self.fragments_rebuilt += len(result.rebuilt)
        self.fragments_quarantined += len(result.quarantined)
        if result.status in (HEALTHY, HEALED, PARTIAL, LOST, BLOCKED):
            setattr(self, result.status, getattr(self, result.status) + 1)
        if result.status in (PARTIAL, LOST, BLOCKED) and len(self.problems) < 1000:
            self.problems.append({"chunk": result.chunk, "status": result.status, "reason": result.reason})


def choose_targets(chunk_hash: str, want: Iterable[int], doc: dict, holding: set[str], usable: set[str],
                   load: dict[str, int] | None = None) -> dict[int, str]:
    """A node for each fragment index in ``want``: its own node when usable and free of this
    chunk's other fragments, else the least loaded usable node holding none of them."""
    taken = set(holding)
    own = {f["i"]: f.get("node") for f in fragments(doc)}
    targets: dict[int, str] = {}
    for i in want:
        node = own.get(i)
        if node not in usable or node in taken:
            free = sorted(usable - taken, key=lambda n: ((load or {}).get(n, 0), hash((chunk_hash, n)) & 0xFFFF, n))
            node = free[0] if free else None
        if node is None:
            continue
        targets[i] = node
        taken.add(node)
        if load is not None:
            load[node] = load.get(node, 0) + 1
    return targets


def _absent_nodes(doc: dict, absent: list[int]) -> list[str]:
    return [f["node"] for f in fragments(doc) if f["i"] in absent]


def _sync(placed: Placed) -> None:
    for d in placed.dirs:
        fsync_dir(d)


def _paged(fetch: Callable[[str | None], list[dict]]) -> Iterable[dict]:
    """Every document of a query read a page at a time in hash order (``fetch(after)``)."""
    after = None
    while True:
        batch = fetch(after)
        if not batch:
            return
        after = batch[-1]["_id"]
        yield from batch


def batches(items: Iterable, size: int) -> Iterator[list]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class NoTarget(Exception):
    """No node can take a fragment (every usable node already holds one of the chunk's)."""


@dataclass
class Healer:
    """Heal, and the moves of fragments that drain, rebalance and convert are made of."""

    chunks: ChunkRepository
    operations: OperationsRepository
    chunkio: ChunkIO
    spool: Spool
    placement: RoundRobinPlacement
    usable_nodes: Callable[[], set[str]]  # up, not full, not draining: asked at each run
    settings: Settings

    def _load(self) -> dict[str, int]:
        """Fragments per node (for choosing the least loaded target)."""
        return {n: v["chunks"] for n, v in self.operations.stats()["perNode"].items()}

    def _undo(self, doc: dict, written: list[dict]) -> None:
        """Remove fragment files this run wrote that the chunk's current document does not name."""
        current = self.chunks.get_chunk(doc["_id"])
        named = set()
        if current is not None and current.get("state") == CHUNK_STORED and layout(current) == layout(doc):
            named = {(f["i"], f["node"]) for f in fragments(current)}
        for f in written:
            if (f["i"], f["node"]) not in named:
                self.chunkio.delete_fragment(doc, f)

    def _stored(self, chunk_hash: str) -> dict | None:
        """The chunk's document while it is stored (not being written or collected)."""
        doc = self.chunks.get_chunk(chunk_hash)
        return doc if doc is not None and doc.get("state") == CHUNK_STORED else None

    def heal_chunk(self, chunk_hash: str, usable: set[str] | None = None,
                   load: dict[str, int] | None = None) -> HealResult:
        """Verify every fragment of one chunk and rebuild those missing or corrupt; idempotent."""
        quarantined: list[int] = []
        for _ in range(ATTEMPTS):
            doc = self._stored(chunk_hash)
            if doc is None:
                return HealResult(chunk_hash, GONE, quarantined=quarantined)
            lay = self.chunkio.layout_of(doc)
            k, m = lay.k, lay.m
            usable_now = self.usable_nodes() if usable is None else usable
            absent = self.chunkio.absent(doc)
            if absent and not choose_targets(chunk_hash, absent, doc,
                                             set(nodes_of(doc)) - set(_absent_nodes(doc, absent)), usable_now):
                # nowhere to put what is missing (a node is down and every other holds a fragment):
                # say so without reading the chunk, as a retry every minute would otherwise do
                self.chunks.flag_heal(chunk_hash)
                return HealResult(chunk_hash, BLOCKED, reason=f"no usable node holds none of its other fragments "
                                                              f"(fragments {absent} missing)")
            found = lay.verify(doc)
            quarantined += self.chunkio.quarantine_corrupt(doc, found, "heal")
            want = [i for i in range(k + m) if i not in found.good]
            if not want:
                if doc.get("needsHeal"):
                    self.chunks.clear_heal_flag(doc)
                self.chunkio.release_held(chunk_hash)
                return HealResult(chunk_hash, HEALTHY, quarantined=quarantined)
            sources = found.good
            if len(found.good) < k:
                held = lay.read_held(doc)  # stored with no fragment to spare: its spooled copy
                if held is None:
                    self.chunks.flag_heal(chunk_hash)
                    reason = f"{len(found.good)} of the {k} fragments needed are readable"
                    log.error("heal: chunk %s cannot be rebuilt: %s", chunk_hash, reason)
                    return HealResult(chunk_hash, LOST, quarantined=quarantined, reason=reason)
                log.warning("heal: chunk %s: %d of the %d fragments needed are readable; rebuilding from its held "
                            "spool copy", chunk_hash, len(found.good), k)
                sources = dict(enumerate(lay.encode(held)))
            holding = {f["node"] for f in fragments(doc) if f["i"] in found.good}
            targets = choose_targets(chunk_hash, want, doc, holding, usable_now, load)
            if not targets:
                self.chunks.flag_heal(chunk_hash)
                reason = f"no usable node holds none of its other fragments (fragments {want} missing)"
                return HealResult(chunk_hash, BLOCKED, quarantined=quarantined, reason=reason)
            try:
                rebuilt = lay.rebuild(sources, sorted(targets))
            except NotEnoughFragments as exc:
                return HealResult(chunk_hash, LOST, quarantined=quarantined, reason=exc.message)
            placed = lay.write_fragments(doc, rebuilt, targets)
            _sync(placed)
            # a fragment not rebuilt keeps its record: missing now, its node may come back with it
            # (a node taken away for a while); forgetting it would make its file a stray on return
            done_now = {f["i"] for f in placed.frags}
            keep = [f for f in fragments(doc) if f["i"] not in done_now]
            frags = sorted(keep + placed.frags, key=lambda f: f["i"])
            complete = len(done_now | set(found.good)) == k + m
            if not self.chunks.set_chunk_layout(doc, frags, needs_heal=not complete):
                self._undo(doc, placed.frags)
                continue
            for f in placed.frags:  # a fragment rebuilt elsewhere: its old file, if any, is not named any more
                old = next((x for x in fragments(doc) if x["i"] == f["i"]), None)
                if old is not None and old.get("node") and old["node"] != f["node"]:
                    self.chunkio.delete_fragment(doc, old)
            if complete:
                self.chunkio.release_held(chunk_hash)
            done = [f["i"] for f in placed.frags]
            self.operations.update_event("heal", inc={"fragments": len(done), "chunks": 1})
            log.info("heal: chunk %s fragments %s rebuilt on %s", chunk_hash, done, [f["node"] for f in placed.frags])
            status = HEALED if complete else PARTIAL
            missing = sorted(set(range(k + m)) - done_now - set(found.good))
            reason = "" if complete else f"fragments {missing} still missing"
            return HealResult(chunk_hash, status, rebuilt=done, quarantined=quarantined, reason=reason)
        return HealResult(chunk_hash, BUSY, quarantined=quarantined, reason="its layout kept changing")

    def chunks_to_heal(self, full_scan: bool = True) -> Iterable[str]:
        """Hashes of chunks flagged for heal, then (``full_scan``) of every stored chunk that misses a
        fragment on its node (a cheap check: no bytes read, a stat per fragment) and of every chunk
        whose spooled copy is still held (heal releases it once the chunk is fully redundant)."""
        seen: set[str] = set()
        for doc in _paged(lambda after: self.chunks.chunks_needing_heal(after, 500)):
            seen.add(doc["_id"])
            yield doc["_id"]
        if full_scan:
            for doc in _paged(lambda after: self.chunks.stored_chunks(after, 500)):
                if doc["_id"] not in seen and not self.chunkio.is_placed(doc):
                    seen.add(doc["_id"])
                    yield doc["_id"]
            for h in self.stale_held():
                if h not in seen:
                    yield h

    def stale_held(self, now: float | None = None) -> Iterable[str]:
        """Held spooled copies that may have outlived their purpose: each one whose chunk is stored (heal
        releases it when the chunk is whole), and, released here, each one whose chunk has had no
        document for longer than the GC grace period (GC deletes the held copy with the chunk; this is
        what a crash in between leaves)."""
        now = time.time() if now is None else now
        for batch in batches(self.spool.held(), 500):
            docs = self.chunks.chunk_docs([h for h, _ in batch])
            for h, since in batch:
                doc = docs.get(h)
                if doc is None:
                    if now - since > self.settings.gc_grace_s:
                        self.chunkio.release_held(h)
                elif doc.get("state") == CHUNK_STORED:
                    yield h

    def heal_all(self, full_scan: bool = True, progress: Callable[[int], None] | None = None,
                 total: Callable[[int], None] | None = None) -> HealReport:
        """Heal every chunk that needs it now. ``progress(n)`` is called per chunk looked at."""
        started = time.monotonic()
        report = HealReport()
        usable = self.usable_nodes()
        load = self._load()
        if total is not None:
            total(self.chunks.count_chunks() if full_scan else self.chunks.count_needing_heal())
        for h in self.chunks_to_heal(full_scan):
            report.add(self.heal_chunk(h, usable, load))
            if progress is not None:
                progress(1)
        report.seconds = time.monotonic() - started
        return report

    # --- moving fragments: drain, rebalance ----------------------------------------------------

    def move_fragment(self, chunk_hash: str, index: int, from_node: str, target: str | None = None,
                      usable: set[str] | None = None, load: dict[str, int] | None = None) -> str:
        """Move fragment ``index`` of a chunk off ``from_node`` (to ``target``, or a node holding none of
        its fragments). A fragment that is missing or corrupt is rebuilt from the others instead of
        copied. Returns "moved", "gone" (no such fragment there any more), or raises NoTarget."""
        usable = self.usable_nodes() if usable is None else usable
        for _ in range(ATTEMPTS):
            doc = self._stored(chunk_hash)
            if doc is None:
                return "gone"
            frag = next((f for f in fragments(doc) if f["i"] == index and f["node"] == from_node), None)
            if frag is None:
                return "gone"
            lay = self.chunkio.layout_of(doc)
            holding = set(nodes_of(doc)) - {from_node}
            node = target
            if node is None:
                free = sorted(usable - holding - {from_node}, key=lambda n: ((load or {}).get(n, 0), n))
                node = free[0] if free else None
            if node is None or node in holding or node == from_node:
                raise NoTarget(f"chunk {chunk_hash}: no usable node holds none of its {lay.width} fragment(s)")
            data, fault = lay.read_fragment(doc, frag)
            if data is None or fault is not None:
                # not readable where it is: rebuild it from the others (a 1+0 copy has no others)
                found = lay.verify(doc)
                others = {i: b for i, b in found.good.items() if i != index}
                if len(others) < lay.k:
                    raise NotEnoughFragments(f"chunk {chunk_hash}: fragment {index} on {from_node} is unreadable and "
                                             f"{len(others)} of {lay.k} others are readable")
                data = lay.rebuild(others, [index])[index]
            placed = lay.write_fragments(doc, {index: data}, {index: node})
            if not placed.frags:
                raise NoTarget(f"chunk {chunk_hash}: writing to {node} failed: {placed.failed}")
            _sync(placed)
            rest = [f for f in fragments(doc) if (f["i"], f["node"]) != (index, from_node)]
            frags = sorted(rest + placed.frags, key=lambda f: f["i"])
            if not self.chunks.set_chunk_layout(doc, frags, needs_heal=bool(doc.get("needsHeal"))):
                self._undo(doc, placed.frags)
                continue
            self.chunkio.delete_fragment(doc, frag)
            if load is not None:
                load[node] = load.get(node, 0) + 1
                load[from_node] = load.get(from_node, 0) - 1
            return "moved"
        raise NoTarget(f"chunk {chunk_hash}: its layout kept changing")

    # --- converting 1+0 chunks to the current layout -------------------------------------------

    def convert_chunk(self, chunk_hash: str, usable: set[str] | None = None) -> str:
        """Re-encode a whole-copy chunk into ``chunkio.ec``; "converted", "skipped" or "gone"."""
        target = self.chunkio.layouts.for_policy(*self.chunkio.ec)
        k, m = target.k, target.m
        for _ in range(ATTEMPTS):
            doc = self._stored(chunk_hash)
            if doc is None:
                return "gone"
            if self.chunkio.layout_of(doc).redundant or not target.redundant:  # not a whole copy, or nothing to gain
                return "skipped"
            data = self.chunkio.read(chunk_hash, doc)  # verified; raises ChunkUnavailable
            usable_now = self.usable_nodes() if usable is None else usable
            stripe = self.placement.next_stripes(1, k + m, usable_now)[0]
            if len(stripe) < k + min(m, 1):
                raise NoTarget(f"a {k}+{m} chunk needs {k + min(m, 1)} usable nodes; {len(stripe)} are")
            new = target.new_document(chunk_hash, doc["size"], doc["xxh3"], stripe)
            placed = target.write(new, data)
            _sync(placed)
            if len(placed.frags) < k + min(m, 1):
                self._undo(new, placed.frags)
                raise NoTarget(f"chunk {chunk_hash}: only {len(placed.frags)} fragment(s) written: {placed.failed}")
            frags = sorted(placed.frags, key=lambda f: f["i"])
            if not self.chunks.set_chunk_layout(doc, frags, needs_heal=len(frags) < k + m, k=k, m=m):
                self._undo(new, placed.frags)
                continue
            for f in fragments(doc):  # the whole copy, no longer named
                self.chunkio.delete_fragment(doc, f)
            return "converted"
        return "skipped"
