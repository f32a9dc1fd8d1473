"""Nodes as an operator sees them: state and load of each, draining one, evening them out after
nodes were added, and re-encoding whole-copy chunks into the current layout.

Draining marks the node (MongoDB ``nodes``) so that no new fragment goes there, then moves every
fragment it holds to a node that holds none of the same chunk's, one compare-and-set at a time
(``pipeline.maintenance.heal.Healer.move_fragment``) while the store serves; it is resumable: a
second run moves what is left. Conversion records its progress in the ``ec_convert`` state document (shown in stats).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from pipeline.errors import ChunkUnavailable, NotEnoughFragments, StoreError
from pipeline.maintenance.heal import Healer, NoTarget
from pipeline.maintenance.progress import TimedReport
from pipeline.metadata.chunks import ChunkRepository
from pipeline.metadata.operations import OperationsRepository
from pipeline.storage.chunkio import ChunkIO, fragments
from pipeline.storage.chunkstore import ChunkStore

log = logging.getLogger(__name__)

CONVERT_EVENT = "ec_convert"
PAGE = 200


@dataclass
class MoveReport(TimedReport):
    node: str | None = None
    moved: int = 0
    failed: int = 0
    remaining: int = 0
    errors: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def not_moved(self, chunk: str, fragment: int, exc: Exception) -> None:
        self.failed += 1
        if len(self.errors) < 100:
            self.errors.append({"chunk": chunk, "fragment": fragment, "error": str(exc)})


@dataclass
class ConvertReport(TimedReport):
    layout: str = ""
    total: int = 0
    converted: int = 0
    failed: int = 0
    errors: list[dict] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class NodeOperations:
    """What an operator does to nodes: list them, drain one, rebalance, convert to the current layout."""

    chunks: ChunkRepository
    operations: OperationsRepository
    nodes: ChunkStore
    chunkio: ChunkIO
    healer: Healer  # moves and re-encodes one chunk at a time
    node_states: Callable[[], list[dict]]  # each configured node: up, down, full or draining
    usable_nodes: Callable[[], set[str]]

    def node_table(self) -> list[dict]:
        """Every node: state (up, down, full, draining), fragment count and bytes, free space."""
        figures = self.operations.stats()["perNode"]
        rows = []
        for status in self.node_states():
            n = status["node"]
            rows.append({"node": n, "path": status["path"], "state": status["state"],
                         "fragments": figures.get(n, {}).get("chunks", 0), "bytes": figures.get(n, {}).get("bytes", 0),
                         "freeBytes": status.get("freeBytes")})
        for n in sorted(set(figures) - set(self.nodes.node_ids)):  # named by metadata, not configured
            rows.append({"node": n, "path": None, "state": "unknown", "fragments": figures[n]["chunks"],
                         "bytes": figures[n]["bytes"], "freeBytes": None})
        return rows

    def drain_node(self, node: str, progress: Callable[[int], None] | None = None,
                   total: Callable[[int], None] | None = None) -> MoveReport:
        """Move every fragment off ``node``; the node stays marked draining (no new fragments) until
        it is removed from the configuration or ``undrain``-ed."""
        if node not in self.nodes.node_ids:
            raise StoreError(f"no node named {node!r}; nodes: {', '.join(self.nodes.node_ids)}")
        started = time.monotonic()
        self.operations.set_node_draining(node, True)
        report = MoveReport(node)
        if total is not None:
            total(self.operations.stats()["perNode"].get(node, {}).get("chunks", 0))
        usable = self.usable_nodes() - {node}
        load = {n: v["chunks"] for n, v in self.operations.stats()["perNode"].items()}
        after = None
        while True:
            page = self.chunks.chunks_on_node(node, after, PAGE)
            if not page:
                break
            after = page[-1]["_id"]
            for doc in page:
                for frag in [f for f in fragments(doc) if f.get("node") == node]:
                    try:
                        self.healer.move_fragment(doc["_id"], frag["i"], node, usable=usable, load=load)
                        report.moved += 1
                    except (NoTarget, NotEnoughFragments, ChunkUnavailable) as exc:
                        report.not_moved(doc["_id"], frag["i"], exc)
                        log.error("drain %s: chunk %s fragment %d not moved: %s", node, doc["_id"], frag["i"], exc)
                    if progress is not None:
                        progress(1)
        report.remaining = self.operations.stats()["perNode"].get(node, {}).get("chunks", 0)
        report.seconds = time.monotonic() - started
        return report

    def rebalance(self, progress: Callable[[int], None] | None = None,
                  total: Callable[[int], None] | None = None) -> MoveReport:
        """Move fragments from the fullest usable node to the emptiest one (that holds none of the same
        chunk's) until no two usable nodes differ by more than one fragment, or nothing can move."""
        started = time.monotonic()
        report = MoveReport()
        usable = self.usable_nodes()
        load = {n: 0 for n in usable}
        load.update({n: v["chunks"] for n, v in self.operations.stats()["perNode"].items() if n in usable})
        if len(load) < 2:
            return report
        if total is not None:
            avg = sum(load.values()) / len(load)
            total(int(sum(max(0, c - avg) for c in load.values())))
        cursors: dict[str, str | None] = {n: None for n in load}
        exhausted: set[str] = set()
        while True:
            heavy = max((n for n in load if n not in exhausted), key=lambda n: load[n], default=None)
            if heavy is None or load[heavy] - min(load.values()) <= 1:
                break
            moved = False
            while not moved:
                page = self.chunks.chunks_on_node(heavy, cursors[heavy], PAGE)
                if not page:
                    exhausted.add(heavy)
                    break
                for doc in page:
                    cursors[heavy] = doc["_id"]
                    holding = {f.get("node") for f in fragments(doc)}
                    light = sorted((n for n in load if n not in holding and load[n] < load[heavy] - 1),
                                   key=lambda n: (load[n], n))
                    if not light:
                        continue
                    frag = next(f for f in fragments(doc) if f.get("node") == heavy)
                    try:
                        self.healer.move_fragment(doc["_id"], frag["i"], heavy, target=light[0], usable=usable,
                                                  load=load)
                        report.moved += 1
                        moved = True
                    except (NoTarget, NotEnoughFragments, ChunkUnavailable) as exc:
                        report.not_moved(doc["_id"], frag["i"], exc)
                    if progress is not None:
                        progress(1)
                    if moved:
                        break
        report.seconds = time.monotonic() - started
        return report

    def convert_all(self, progress: Callable[[int], None] | None = None,
                    total: Callable[[int], None] | None = None) -> ConvertReport:
        """Re-encode every whole-copy (1+0) chunk into the current layout; resumable (what is left is
        whatever is still 1+0), progress in the ``ec_convert`` state document."""
        started = time.monotonic()
        k, m = self.chunkio.ec
        report = ConvertReport(layout=f"{k}+{m}")
        if (k, m) == (1, 0):
            return report
        report.total = self.chunks.count_chunks(whole_only=True)
        if total is not None:
            total(report.total)
        self.operations.update_event(CONVERT_EVENT, {"running": True, "layout": report.layout, "total": report.total,
                                                     "converted": 0, "failed": 0, "started": time.time()})
        usable = self.usable_nodes()
        after = None
        while True:
            page = self.chunks.stored_chunks(after, PAGE, whole_only=True)
            if not page:
                break
            after = page[-1]["_id"]
            done_before = (report.converted, report.failed)
            for doc in page:
                try:
                    if self.healer.convert_chunk(doc["_id"], usable) == "converted":
                        report.converted += 1
                except (NoTarget, ChunkUnavailable, NotEnoughFragments) as exc:
                    report.failed += 1
                    if len(report.errors) < 100:
                        report.errors.append({"chunk": doc["_id"], "error": str(exc)})
                    log.error("ec convert: chunk %s: %s", doc["_id"], exc)
                if progress is not None:
                    progress(1)
            self.operations.update_event(CONVERT_EVENT, inc={"converted": report.converted - done_before[0],
                                                             "failed": report.failed - done_before[1]})
        report.seconds = time.monotonic() - started
        self.operations.update_event(CONVERT_EVENT, {"running": False, "finished": time.time(),
                                                     "remaining": self.chunks.count_chunks(whole_only=True)})
        return report
