"""Every read and write of chunk bytes goes through here: spooled chunks of uploads in flight, and
placed chunks on nodes in the layout their document records.

``ChunkIO`` dispatches each placed chunk to its layout (``pipeline.storage.layouts``: ``WholeCopyLayout``
for ``1+0``, ``ErasureCodedLayout`` for ``k+m``), chosen by a ``LayoutRouter`` from the ``(k, m)``
its document records; new chunks take the store's policy (``MINIS3_EC``). What is not one layout's
own stays here: the spool's chunks of uploads in flight, held spooled copies, and reporting damage.
``fv`` counts changes of a document's ``frags``, so that heal, drain and convert change a layout
with a compare-and-set.

Every read is verified before its bytes are returned (``pipeline.storage.layouts.fault``). A corrupt
fragment found by a read goes to its node's quarantine and ``on_damage(hash)`` is called so that
the caller can queue a heal. A read that cannot be served raises ``ChunkUnavailable`` and is
logged with the chunk's hash and node(s).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable

from pipeline.cache import Lru
from pipeline.errors import NodeUnavailable
from pipeline.storage.chunkstore import ChunkStore, Spool, StoredChunk, SyncBatch, fsync_dir
from pipeline.storage.layouts import WHOLE, FragmentCheck, Layout, LayoutRouter, Placed, fault, layout, unavailable
# what callers read chunk documents with, from where they always have
from pipeline.storage.layouts import fragment_name, fragments, missing_indexes, nodes_of  # noqa: F401

log = logging.getLogger(__name__)

REPORT_EVERY_S = 60.0
REPORTED_MAX = 100_000


class ChunkIO:
    def __init__(self, chunks: ChunkStore, spool: Spool, ec: tuple[int, int] = WHOLE):
        self.chunks = chunks
        self.spool = spool
        self.ec = tuple(ec)  # the layout of new chunks
        self.layouts = LayoutRouter(chunks, spool)
        self.on_damage: Callable[[str], None] | None = None
        # several damaged chunks at once (a read's page): one call instead of one per chunk
        self.on_damages: Callable[[list[str]], None] | None = None
        # chunks whose missing fragments this process reported lately: while a node is down every
        # read of its chunks is degraded, and one report (and log line) a minute per chunk is enough
        self._reported = Lru(REPORTED_MAX)  # chunk hash -> monotonic time of its last report

    def layout_of(self, doc: dict) -> Layout:
        """The layout a chunk document records."""
        return self.layouts.for_chunk(doc)

    def new_document(self, chunk_hash: str, size: int, xxh3_hex: str, nodes: list[str],
                     ec: tuple[int, int] | None = None) -> dict:
        """The claim of a new chunk in the store's layout (or ``ec``): see ``Layout.new_document``."""
        return self.layouts.for_policy(*(ec or self.ec)).new_document(chunk_hash, size, xxh3_hex, nodes)

    # --- presence (no bytes read) --------------------------------------------------------------

    def is_placed(self, doc: dict) -> bool:
        """Every fragment of the layout is recorded, with its checksum, and on its node with its size."""
        return self.layout_of(doc).is_placed(doc)

    def present(self, doc: dict) -> int:
        """How many recorded fragments are on their nodes with their size."""
        return len(self.layout_of(doc).present(doc))

    def absent(self, doc: dict) -> list[int]:
        """Fragment indexes not recorded, or not on their node with their size."""
        lay = self.layout_of(doc)
        here = {f["i"] for f in lay.present(doc)}
        return [i for i in range(lay.width) if i not in here]

    def is_readable(self, doc: dict) -> bool:
        """At least k fragments are on their nodes."""
        return self.present(doc) >= layout(doc)[0]

    # --- writes ----------------------------------------------------------------------------

    def place_from_spool(self, doc: dict, src: Path, batch: SyncBatch | None = None) -> Placed:
        """Put a durable spooled chunk into its layout. A whole copy is moved (a rename); an
        erasure-coded chunk is read, verified, encoded and its fragments written, each atomically,
        to their nodes, while the spooled copy stays until the file is stored. A fragment whose
        node is down or full is left out (``Placed.failed``).

        Raises FileNotFoundError when the spooled copy is gone (another ingest moved it)."""
        return self.layout_of(doc).place_from_spool(doc, src, batch)

    def watch(self, doc: dict, batch: SyncBatch) -> None:
        """Have ``batch`` make durable a chunk found placed by another writer (a twin ingest whose own
        batch may not be committed yet): its nodes' filesystems are synced with the batch's writes."""
        for node in nodes_of(doc):
            try:
                self.chunks.watch(batch, node)
            except NodeUnavailable:  # gone since it was seen: nothing of it to sync there
                pass

    def write(self, doc: dict, data: bytes) -> Placed:
        """Write a chunk from memory into its layout, durably (repair and tests)."""
        placed = self.layout_of(doc).write(doc, data)
        for d in placed.dirs:
            fsync_dir(d)
        return placed

    def delete(self, doc: dict) -> None:
        """Remove every fragment of a chunk (and, erasure-coded, its strays and held spool copy)."""
        self.layout_of(doc).delete(doc)

    def delete_fragment(self, doc: dict, frag: dict) -> bool:
        return self.layout_of(doc).delete_fragment(doc, frag)

    # --- verification ----------------------------------------------------------------------

    def verify(self, doc: dict, enough: int | None = None) -> FragmentCheck:
        """Read and verify the chunk's fragments (see ``Layout.verify``)."""
        return self.layout_of(doc).verify(doc, enough)

    def read_fragment(self, doc: dict, frag: dict) -> tuple[bytes | None, str | None]:
        """(bytes, fault) of one fragment; (None, None) when it is not on its node."""
        return self.layout_of(doc).read_fragment(doc, frag)

    def audit(self, doc: dict, frag: dict, entry: StoredChunk) -> str | None:
        """Why a chunk file that the document names is damaged; None when sound (fsck)."""
        return self.layout_of(doc).audit(doc, frag, entry)

    def quarantine(self, doc: dict, frag: dict) -> bool:
        return self.layout_of(doc).quarantine(doc, frag)

    def quarantine_corrupt(self, doc: dict, found: FragmentCheck, by: str) -> list[int]:
        """Move the corrupt fragments ``found`` aside; the indexes of those moved."""
        moved = []
        for frag, reason in found.corrupt:
            log.error("%s: chunk %s fragment %d on %s: %s; quarantined", by, doc["_id"], frag["i"], frag["node"],
                      reason)
            if self.quarantine(doc, frag):
                moved.append(frag["i"])
        return moved

    # --- reads -----------------------------------------------------------------------------

    def read(self, chunk_hash: str, doc: dict | None, damaged: list[str] | None = None) -> bytes:
        """The chunk's bytes from its layout, verified. ``damaged``: a list that collects the
        hashes of damaged chunks for ``report_damaged`` later, instead of reporting each now."""
        if doc is None:
            raise unavailable(chunk_hash, None, "no chunk document")
        return self.layout_of(doc).read(doc, lambda found: self._damaged(doc, found, damaged))

    def _damaged(self, doc: dict, found: FragmentCheck, damaged: list[str] | None = None) -> None:
        now = time.monotonic()
        if not found.corrupt and doc.get("needsHeal"):
            return  # flagged already: its heal is queued or waits for a node to come back
        if not found.corrupt:
            last = self._reported.get(doc["_id"])
            if last is not None and now - last < REPORT_EVERY_S:
                return
            self._reported.put(doc["_id"], now)
        self.quarantine_corrupt(doc, found, "read")
        for frag in found.missing:
            log.warning("chunk %s fragment %d missing on node %s", doc["_id"], frag["i"], frag["node"])
        if damaged is not None:
            damaged.append(doc["_id"])
        elif self.on_damage is not None:
            try:
                self.on_damage(doc["_id"])
            except Exception as exc:  # a heal that cannot be queued now is found by scrub later
                log.warning("could not queue a heal of chunk %s: %r", doc["_id"], exc)

    def report_damaged(self, hashes: list[str]) -> None:
        """Report the damaged chunks a read collected (see ``read``), in one call when it can."""
        if not hashes:
            return
        try:
            if self.on_damages is not None:
                self.on_damages(list(dict.fromkeys(hashes)))
            elif self.on_damage is not None:
                for h in dict.fromkeys(hashes):
                    self.on_damage(h)
        except Exception as exc:  # a heal that cannot be queued now is found by scrub later
            log.warning("could not queue heals of %d damaged chunk(s): %r", len(hashes), exc)

    # --- held copies ---------------------------------------------------------------------------

    def needs_hold(self, doc: dict, written: int) -> bool:
        """A chunk stored with ``written`` fragments keeps its spooled copy while it could not
        survive the loss of one more node (fewer than k+1 fragments) and has parity to heal."""
        return self.layout_of(doc).needs_hold(written)

    def read_held(self, doc: dict) -> bytes | None:
        """The chunk's held spool copy, verified; None when there is none (or it does not verify)."""
        return self.layout_of(doc).read_held(doc)

    def release_held(self, chunk_hash: str) -> None:
        if self.spool.release(chunk_hash):
            log.info("chunk %s fully redundant again: its held spool copy is released", chunk_hash)

    def read_spooled(self, file_id: str, index: int, size: int, xxh3_hex: str) -> bytes | None:
        """A chunk of an upload not yet ingested, verified; None when the spool no longer holds it
        (ingest placed it meanwhile: read it from its layout). Once open, a rename of the spooled
        file into a node, or the spool directory's removal, does not disturb the read."""
        try:
            fd = os.open(self.spool.chunk_path(file_id, index), os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb", buffering=0) as f:
            data = f.read()
        if fault(data, size, xxh3_hex) is not None:
            raise unavailable(f"{file_id}/{index}", "spool", "spooled chunk does not match its checksum")
        return data
