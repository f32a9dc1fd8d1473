"""Every read and write of chunk bytes goes through here: spooled chunks of uploads in flight, and
placed chunks on nodes in the layout their document records.

A chunk document (``metadata.chunks``) says how the chunk is kept: ``k`` data and ``m`` parity
fragments, each ``{"i", "node", "size", "xxh3"}`` in ``frags``. ``1+0`` is one whole copy whose
single fragment is the chunk itself, at ``<node>/<h[0:2]>/<h[2:4]>/<h>``. Documents written before
layouts existed carry a bare ``node``: they read as ``1+0``.

Every read is verified before its bytes are returned: the fragment against its own xxh3-128, the
chunk against the xxh3-128 recorded at upload. A failed read raises ``ChunkUnavailable`` and is
logged with the chunk's hash and node.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import xxhash

from pipeline.chunkstore import ChunkStore, Spool
from pipeline.errors import ChunkUnavailable

log = logging.getLogger(__name__)


def fragments(doc: dict) -> list[dict]:
    """Where each fragment of a chunk lives, whatever the age of its document."""
    frags = doc.get("frags")
    if frags is not None:
        return frags
    return [{"i": 0, "node": doc.get("node"), "size": doc.get("size"), "xxh3": doc.get("xxh3")}]


def layout(doc: dict) -> tuple[int, int]:
    return doc.get("k", 1), doc.get("m", 0)


def nodes_of(doc: dict) -> list[str]:
    return [f["node"] for f in fragments(doc)]


def fragment_name(chunk_hash: str, index: int, k: int, m: int) -> str:
    """A whole copy is named by its hash; a fragment of an erasure-coded chunk adds its index."""
    return chunk_hash if (k, m) == (1, 0) else f"{chunk_hash}.{index}"


class ChunkIO:
    def __init__(self, chunks: ChunkStore, spool: Spool):
        self.chunks = chunks
        self.spool = spool

    # --- layouts ---------------------------------------------------------------------------

    @staticmethod
    def new_document(chunk_hash: str, size: int, xxh3: str, nodes: list[str]) -> dict:
        """The claim of a new chunk: its layout and the node of each fragment (one copy for now)."""
        return {"_id": chunk_hash, "size": size, "xxh3": xxh3, "k": 1, "m": 0,
                "frags": [{"i": 0, "node": nodes[0], "size": size, "xxh3": xxh3}]}

    def fragment_paths(self, doc: dict) -> list[tuple[dict, Path]]:
        k, m = layout(doc)
        return [(f, self.chunks.path(f["node"], fragment_name(doc["_id"], f["i"], k, m)))
                for f in fragments(doc)]

    def is_placed(self, doc: dict) -> bool:
        """Every fragment is on its node with its size (a cheap check: no bytes are read)."""
        k, m = layout(doc)
        return all(self.chunks.exists(f["node"], fragment_name(doc["_id"], f["i"], k, m), f["size"])
                   for f in fragments(doc))

    # --- writes ----------------------------------------------------------------------------

    def place_from_spool(self, doc: dict, src: Path) -> set[Path]:
        """Move a durable spooled chunk into its layout; returns the directories to fsync.

        Raises FileNotFoundError when the spooled copy is gone (another ingest moved it)."""
        k, m = layout(doc)
        if (k, m) != (1, 0):
            raise NotImplementedError(f"layout {k}+{m}")
        frag = fragments(doc)[0]
        return {self.chunks.place(src, frag["node"], doc["_id"])}

    def write(self, doc: dict, data: bytes) -> None:
        """Write a chunk from memory into its layout (repair and tests)."""
        frag = fragments(doc)[0]
        self.chunks.write(frag["node"], doc["_id"], data)

    def delete(self, doc: dict) -> None:
        k, m = layout(doc)
        for frag in fragments(doc):
            self.chunks.delete(frag["node"], fragment_name(doc["_id"], frag["i"], k, m))

    # --- reads -----------------------------------------------------------------------------

    def read(self, chunk_hash: str, doc: dict | None) -> bytes:
        """The chunk's bytes from its layout, verified."""
        if doc is None:
            raise _unavailable(chunk_hash, None, "no chunk document")
        frag, path = self.fragment_paths(doc)[0]
        try:
            with open(path, "rb", buffering=0) as f:
                data = f.read()
        except (FileNotFoundError, KeyError):
            raise _unavailable(chunk_hash, frag["node"], "chunk file missing") from None
        if len(data) != doc["size"] or xxhash.xxh3_128_hexdigest(data) != doc["xxh3"]:
            raise _unavailable(chunk_hash, frag["node"], "content does not match its checksum")
        return data

    def read_spooled(self, file_id: str, index: int, size: int, xxh3: str) -> bytes | None:
        """A chunk of an upload not yet ingested, verified; None when the spool no longer holds it
        (ingest placed it meanwhile: read it from its layout). Once open, a rename of the spooled
        file into a node, or the spool directory's removal, does not disturb the read."""
        try:
            fd = os.open(self.spool.chunk_path(file_id, index), os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb", buffering=0) as f:
            data = f.read()
        if len(data) != size or xxhash.xxh3_128_hexdigest(data) != xxh3:
            raise _unavailable(f"{file_id}/{index}", "spool", "spooled chunk does not match its checksum")
        return data


def _unavailable(chunk_hash: str, node: str | None, reason: str) -> ChunkUnavailable:
    log.error("read failed: chunk %s on node %s: %s", chunk_hash, node, reason)
    return ChunkUnavailable(chunk_hash, node, reason)
