"""Chunk layouts: how one chunk is kept on nodes, one class per coding policy.

A chunk document (``pipeline.metadata.chunks``) records its layout: ``k`` data and ``m`` parity fragments,
each ``{"i", "node", "size", "xxh3"}`` in ``frags``. ``WholeCopyLayout`` (``1+0``) keeps one whole
copy, whose single fragment is the chunk itself, named by its hash; ``ErasureCodedLayout`` (``k+m``,
Reed-Solomon, ``pipeline.storage.erasure``) keeps fragment ``i`` as ``<h>.<i>`` on its own node. Documents
written before layouts existed carry a bare ``node``: they read as ``1+0``.

Both classes answer one interface, ``Layout``: a new chunk's document, which fragments are on their
nodes, write, read, verify, rebuild, delete. ``LayoutRouter`` picks the class once per policy, from
``(k, m)`` or from the layout a chunk document records, the way Swift's DiskFileRouter picks a
diskfile class per storage policy; a store holds chunks of both after a conversion. Paths and
atomic writes belong to ``pipeline.storage.chunkstore``; reporting damage and the spool's uploads in flight
belong to ``pipeline.storage.chunkio``.

Every byte read back is checked by ``fault``: a fragment against its own xxh3-128, a chunk against
the xxh3-128 recorded at upload.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import xxhash

from pipeline.errors import ChunkUnavailable, InsufficientStorage, NodeUnavailable, NotEnoughFragments
from pipeline.storage.chunkstore import ChunkStore, Spool, StoredChunk, SyncBatch
from pipeline.storage.erasure import Codec

log = logging.getLogger(__name__)

WHOLE = (1, 0)


# --- chunk documents -------------------------------------------------------------------------------

def fragments(doc: dict) -> list[dict]:
    """Where each fragment of a chunk lives, whatever the age of its document."""
    frags = doc.get("frags")
    if frags is not None:
        return frags
    return [{"i": 0, "node": doc.get("node"), "size": doc.get("size"), "xxh3": doc.get("xxh3")}]


def layout(doc: dict) -> tuple[int, int]:
    """The ``(k, m)`` a chunk document records."""
    return doc.get("k", 1), doc.get("m", 0)


def nodes_of(doc: dict) -> list[str]:
    return [f["node"] for f in fragments(doc)]


def missing_indexes(doc: dict) -> list[int]:
    """Fragment indexes the document records no node for."""
    k, m = layout(doc)
    have = {f["i"] for f in fragments(doc)}
    return [i for i in range(k + m) if i not in have]


def xxh3(data) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def fault(data, size: int, checksum: str | None) -> str | None:
    """Why ``data`` is not the ``size`` bytes whose xxh3-128 is ``checksum``; None when it is. The one
    check of every fragment and chunk read back."""
    if len(data) != size:
        return f"{len(data)} bytes, expected {size}"
    if xxh3(data) != checksum:
        return "content does not match its checksum"
    return None


def unavailable(chunk_hash: str, node: str | None, reason: str) -> ChunkUnavailable:
    log.error("read failed: chunk %s on node %s: %s", chunk_hash, node, reason)
    return ChunkUnavailable(chunk_hash, node, reason)


@dataclass
class Placed:
    """What a write of a chunk into its layout did."""
    dirs: set[Path] = field(default_factory=set)  # to fsync before the document says stored
    frags: list[dict] = field(default_factory=list)  # fragments now durable (once dirs are synced)
    failed: dict[int, str] = field(default_factory=dict)  # fragment index -> why it was not written


@dataclass
class FragmentCheck:
    """The fragments of one chunk, each read and verified."""
    good: dict[int, bytes] = field(default_factory=dict)
    missing: list[dict] = field(default_factory=list)  # recorded, not on its node
    corrupt: list[tuple[dict, str]] = field(default_factory=list)  # (fragment, reason)
    bytes_read: int = 0


# --- the interface ---------------------------------------------------------------------------------

class Layout(ABC):
    """One coding policy ``k+m``: how a chunk's fragments are named, written, read back and rebuilt."""

    # what a fragment recorded without its checksum is (a claim not yet written): None if acceptable
    UNRECORDED: str | None = "no checksum recorded"

    def __init__(self, chunks: ChunkStore, spool: Spool, k: int, m: int):
        self.chunks = chunks
        self.spool = spool
        self.codec = Codec(k, m)
        self.k, self.m = k, m

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.k}+{self.m})"

    @property
    def width(self) -> int:
        """Fragments a complete chunk has."""
        return self.k + self.m

    @property
    def redundant(self) -> bool:
        """A lost fragment can be rebuilt from the others (heal has work to do)."""
        return self.m > 0

    @staticmethod
    @abstractmethod
    def fragment_name(chunk_hash: str, index: int) -> str:
        """The file name of fragment ``index`` on its node."""

    @abstractmethod
    def new_document(self, chunk_hash: str, size: int, xxh3_hex: str, nodes: Sequence[str]) -> dict:
        """The claim of a new chunk: ``nodes[i]`` holds fragment ``i`` (fewer nodes than fragments
        leave the last ones missing). Fragment checksums are recorded as fragments are written."""

    @abstractmethod
    def place_from_spool(self, doc: dict, src: Path, batch: SyncBatch | None = None) -> Placed:
        """Put a durable spooled chunk into this layout. Raises FileNotFoundError when the spooled
        copy is gone (another ingest moved it). With a ``batch`` the writes are durable once it is
        committed (``Placed.dirs`` then need no fsync)."""

    @abstractmethod
    def read(self, doc: dict, on_damage: Callable[[FragmentCheck], None]) -> bytes:
        """The chunk's bytes, verified, or ChunkUnavailable. ``on_damage(found)`` is called when the
        read found fragments missing or corrupt."""

    def needs_hold(self, written: int) -> bool:
        """A chunk stored with ``written`` fragments keeps its spooled copy (see ``pipeline.datapath.ingest``)."""
        return False

    # --- presence (a stat per fragment, no bytes read) ---------------------------------------

    def present(self, doc: dict) -> list[dict]:
        """The recorded fragments that are on their nodes with their size and have a checksum."""
        return [f for f in fragments(doc) if f.get("node") and f.get("xxh3") is not None and
                self.chunks.exists(f["node"], self.fragment_name(doc["_id"], f["i"]), f["size"])]

    def is_placed(self, doc: dict) -> bool:
        """Every fragment of the layout is recorded, with its checksum, and on its node."""
        frags = fragments(doc)
        return len(frags) >= self.width and len(self.present(doc)) == len(frags)

    # --- verification ------------------------------------------------------------------------

    def fragment_fault(self, frag: dict, data) -> str | None:
        """Why ``data`` read for ``frag`` is not that fragment; None when it is."""
        if frag.get("xxh3") is None and len(data) == frag["size"]:
            return self.UNRECORDED
        return fault(data, frag["size"], frag.get("xxh3"))

    def read_fragment(self, doc: dict, frag: dict) -> tuple[bytes | None, str | None]:
        """(bytes, fault) of one fragment; (None, None) when it is not on its node."""
        if not frag.get("node"):
            return None, None
        data = self.chunks.read_fragment(frag["node"], self.fragment_name(doc["_id"], frag["i"]))
        return data, None if data is None else self.fragment_fault(frag, data)

    def verify(self, doc: dict, enough: int | None = None) -> FragmentCheck:
        """Read and verify the chunk's fragments in index order (data first), stopping once
        ``enough`` are good (all of them when None)."""
        result = FragmentCheck()
        for frag in sorted(fragments(doc), key=lambda f: f["i"]):
            if enough is not None and len(result.good) >= enough:
                break
            data, reason = self.read_fragment(doc, frag)
            if data is None:
                result.missing.append(frag)
                continue
            result.bytes_read += len(data)
            if reason is not None:
                result.corrupt.append((frag, reason))
            else:
                result.good[frag["i"]] = data
        return result

    def audit(self, doc: dict, frag: dict, entry: StoredChunk) -> str | None:
        """Why the file ``entry`` (fragment ``frag`` of ``doc``) is damaged, None when it is sound
        (fsck). Raises FileNotFoundError when it went meanwhile."""
        data, reason = self.read_fragment(doc, frag)
        if data is None:
            raise FileNotFoundError(entry.path)
        return reason

    # --- writes ------------------------------------------------------------------------------

    def encode(self, data: bytes) -> list[bytes]:
        return self.codec.encode(data)

    def write(self, doc: dict, data: bytes, targets: Mapping[int, str] | None = None,
              batch: SyncBatch | None = None) -> Placed:
        """Encode a chunk and write fragment ``i`` to ``targets[i]`` (each recorded node when None)."""
        return self.write_fragments(doc, self.encode(data), targets, batch)

    def write_fragments(self, doc: dict, pieces: Mapping[int, bytes] | Sequence[bytes],
                        targets: Mapping[int, str] | None = None, batch: SyncBatch | None = None) -> Placed:
        """Write fragment ``i`` (``pieces[i]``) to ``targets[i]``, each atomically; a fragment whose
        node is down, full or failing is left out (``Placed.failed``). The caller syncs ``dirs``."""
        if targets is None:
            targets = {f["i"]: f["node"] for f in fragments(doc)}
        placed = Placed()
        for i, node in sorted(targets.items()):
            piece = pieces[i]
            try:
                placed.dirs.add(self.chunks.write_fragment(node, self.fragment_name(doc["_id"], i), piece, batch))
            except (NodeUnavailable, InsufficientStorage) as exc:
                placed.failed[i] = f"{node}: {exc.message}"
                log.warning("fragment %d of chunk %s not written to %s: %s", i, doc["_id"], node, exc.message)
                continue
            except OSError as exc:  # a read-only or failing disk: that node is down for this write
                placed.failed[i] = f"{node}: {exc.strerror or exc}"
                log.warning("fragment %d of chunk %s not written to %s: %r", i, doc["_id"], node, exc)
                continue
            placed.frags.append({"i": i, "node": node, "size": len(piece), "xxh3": xxh3(piece)})
        return placed

    def rebuild(self, good: Mapping[int, bytes], want: Sequence[int]) -> dict[int, bytes]:
        """The fragments ``want`` from verified ones (``good``); raises NotEnoughFragments."""
        return self.codec.reconstruct(good, list(want))

    # --- removal -----------------------------------------------------------------------------

    def delete_fragment(self, doc: dict, frag: dict) -> bool:
        return self.chunks.delete(frag["node"], self.fragment_name(doc["_id"], frag["i"]))

    def quarantine(self, doc: dict, frag: dict) -> bool:
        return self.chunks.quarantine(frag["node"], self.fragment_name(doc["_id"], frag["i"])) is not None

    def delete(self, doc: dict) -> None:
        """Remove every fragment the document records."""
        for frag in fragments(doc):
            if frag.get("node") is not None:
                self.delete_fragment(doc, frag)

    # --- the held spooled copy -----------------------------------------------------------------

    def read_held(self, doc: dict) -> bytes | None:
        """The chunk's held spool copy, verified; None when there is none (or it does not verify)."""
        data = self.spool.read_held(doc["_id"])
        if data is None:
            return None
        if fault(data, doc["size"], doc["xxh3"]) is not None:
            log.error("held spool copy of chunk %s does not match its checksum", doc["_id"])
            return None
        return data


class WholeCopyLayout(Layout):
    """``1+0``: one whole copy on one node, named by its hash: the chunk is its only fragment."""

    UNRECORDED = None  # its one fragment is the chunk: the chunk's checksum is checked on read

    def __init__(self, chunks: ChunkStore, spool: Spool, k: int = 1, m: int = 0):
        if (k, m) != WHOLE:
            raise ValueError(f"a whole copy is 1+0, not {k}+{m}")
        super().__init__(chunks, spool, k, m)

    @staticmethod
    def fragment_name(chunk_hash: str, index: int = 0) -> str:
        return chunk_hash

    def new_document(self, chunk_hash: str, size: int, xxh3_hex: str, nodes: Sequence[str]) -> dict:
        return {"_id": chunk_hash, "size": size, "xxh3": xxh3_hex, "k": 1, "m": 0, "fv": 0,
                "frags": [{"i": 0, "node": nodes[0], "size": size, "xxh3": xxh3_hex}]}

    def place_from_spool(self, doc: dict, src: Path, batch: SyncBatch | None = None) -> Placed:
        """A rename: the spooled copy becomes the chunk file."""
        frag = fragments(doc)[0]
        return Placed({self.chunks.place(src, frag["node"], doc["_id"], batch)}, [dict(frag)])

    def read(self, doc: dict, on_damage: Callable[[FragmentCheck], None]) -> bytes:
        """No other fragment to fall back on: a missing or corrupt copy is an unavailable chunk."""
        frag = fragments(doc)[0]
        data = self.chunks.read_fragment(frag["node"], doc["_id"]) if frag.get("node") else None
        if data is None:
            raise unavailable(doc["_id"], frag["node"], "chunk file missing")
        if fault(data, doc["size"], doc["xxh3"]) is not None:
            # the reason is one of the fixed few a metric label takes
            raise unavailable(doc["_id"], frag["node"], "content does not match its checksum")
        return data

    def audit(self, doc: dict, frag: dict, entry: StoredChunk) -> str | None:
        """A whole copy must hash (SHA-256) to its name: the strongest check there is of it."""
        digest = self.chunks.sha256(entry)
        if entry.size != frag["size"]:
            return f"{entry.size} bytes, expected {frag['size']}"
        return None if digest == doc["_id"] else f"content hashes to {digest}"


class ErasureCodedLayout(Layout):
    """``k+m``: ``k`` data and ``m`` parity fragments, fragment ``i`` as ``<h>.<i>`` on its own node.

    A read concatenates the data fragments (no decoding) and replaces a missing or corrupt one with
    parity on the fly. A chunk stored with no fragment to spare (fewer than k+1) keeps its spooled
    copy (``Spool.hold``) until heal has written every fragment, and a read that finds fewer than k
    good fragments is served from that copy."""

    def __init__(self, chunks: ChunkStore, spool: Spool, k: int, m: int):
        if (k, m) == WHOLE:
            raise ValueError("1+0 is a whole copy, not an erasure code")
        super().__init__(chunks, spool, k, m)

    @staticmethod
    def fragment_name(chunk_hash: str, index: int) -> str:
        return f"{chunk_hash}.{index}"

    def new_document(self, chunk_hash: str, size: int, xxh3_hex: str, nodes: Sequence[str]) -> dict:
        fsize = self.codec.fragment_size(size)
        return {"_id": chunk_hash, "size": size, "xxh3": xxh3_hex, "k": self.k, "m": self.m, "fv": 0,
                "frags": [{"i": i, "node": n, "size": fsize, "xxh3": None} for i, n in enumerate(nodes[:self.width])]}

    def place_from_spool(self, doc: dict, src: Path, batch: SyncBatch | None = None) -> Placed:
        """Read, verify, encode and write the fragments; the spooled copy stays until the file is stored."""
        with open(src, "rb", buffering=0) as f:
            data = f.read()
        if fault(data, doc["size"], doc["xxh3"]) is not None:
            raise ChunkUnavailable(doc["_id"], "spool", "spooled chunk does not match its checksum")
        return self.write(doc, data, batch=batch)

    def needs_hold(self, written: int) -> bool:
        """Until it could survive the loss of one more node (k+1 fragments)."""
        return written < self.k + 1

    def read(self, doc: dict, on_damage: Callable[[FragmentCheck], None]) -> bytes:
        chunk_hash, k = doc["_id"], self.k
        found = self.verify(doc, enough=k)
        if len(found.good) < k:
            on_damage(found)
            held = self.read_held(doc)
            if held is not None:
                log.warning("chunk %s: %d of the %d fragments needed are readable; served from its held "
                            "spool copy", chunk_hash, len(found.good), k)
                return held
            log.error("chunk %s: %d of the %d fragments needed are readable (%d corrupt, %d missing)", chunk_hash,
                      len(found.good), k, len(found.corrupt), len(found.missing))
            # the reason is one of the fixed few a metric label takes
            raise unavailable(chunk_hash, ",".join(nodes_of(doc)), "content does not match its checksum"
                              if found.corrupt else "chunk file missing")
        try:
            data = self.codec.decode(found.good, doc["size"])
        except NotEnoughFragments as exc:
            raise unavailable(chunk_hash, ",".join(nodes_of(doc)), exc.message) from None
        if xxh3(data) != doc["xxh3"]:
            raise unavailable(chunk_hash, ",".join(nodes_of(doc)), "decoded content does not match its checksum")
        if found.missing or found.corrupt or len(fragments(doc)) < self.width:
            on_damage(found)
        return data

    def delete(self, doc: dict) -> None:
        """Also any fragment file of it that another node still holds (one a heal or a move wrote
        before it was interrupted), and its held spool copy."""
        self.spool.release(doc["_id"])
        super().delete(doc)
        for node in self.chunks.node_ids:
            for i in range(self.width):
                self.chunks.delete(node, self.fragment_name(doc["_id"], i))


# --- choosing the layout ---------------------------------------------------------------------------

def layout_class(k: int, m: int) -> type[Layout]:
    """The class of the policy ``k+m``: the one place that tells a whole copy from an erasure code."""
    return WholeCopyLayout if (k, m) == WHOLE else ErasureCodedLayout


def fragment_name(chunk_hash: str, index: int, k: int, m: int) -> str:
    """A whole copy is named by its hash; a fragment of an erasure-coded chunk adds its index."""
    return layout_class(k, m).fragment_name(chunk_hash, index)


class LayoutRouter:
    """One ``Layout`` per policy, made on first use (its codec with it)."""

    def __init__(self, chunks: ChunkStore, spool: Spool):
        self.chunks = chunks
        self.spool = spool
        self._layouts: dict[tuple[int, int], Layout] = {}

    def for_policy(self, k: int, m: int) -> Layout:
        found = self._layouts.get((k, m))
        if found is None:
            found = self._layouts[(k, m)] = layout_class(k, m)(self.chunks, self.spool, k, m)
        return found

    def for_chunk(self, doc: dict) -> Layout:
        """The layout a chunk document records."""
        return self.for_policy(*layout(doc))
