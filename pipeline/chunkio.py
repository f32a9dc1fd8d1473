"""Every read and write of chunk bytes goes through here: spooled chunks of uploads in flight, and
placed chunks on nodes in the layout their document records.

A chunk document (``metadata.chunks``) says how the chunk is kept: ``k`` data and ``m`` parity
fragments, each ``{"i", "node", "size", "xxh3"}`` in ``frags``. ``1+0`` is one whole copy whose
single fragment is the chunk itself, at ``<node>/<h[0:2]>/<h[2:4]>/<h>``; fragment ``i`` of a
``k+m`` chunk (Reed-Solomon, ``pipeline.erasure``) is ``<h>.<i>`` on its own node. Documents written
before layouts existed carry a bare ``node``: they read as ``1+0``. ``frags`` lists the fragments
that were written; an index it lacks is missing (a node was down at write time) until heal
writes it; a chunk stored with no fragment to spare (fewer than k+1) keeps its spooled copy
(``Spool.hold``) until heal has written every fragment, and a read that finds fewer than k
fragments is served from that copy. ``fv`` counts changes of ``frags``, so that heal, drain and convert change a layout
with a compare-and-set.

Every read is verified before its bytes are returned: each fragment against its own xxh3-128,
the chunk against the xxh3-128 recorded at upload. An erasure-coded read takes the data
fragments (concatenation, no decoding) and replaces a missing or corrupt one with parity on the
fly; the corrupt fragment goes to its node's quarantine and ``on_damage(hash)`` is called so that
the caller can queue a heal. A read that cannot be served raises ``ChunkUnavailable`` and is
logged with the chunk's hash and node(s).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import xxhash

from pipeline.cache import Lru
from pipeline.chunkstore import ChunkStore, Spool, fsync_dir
from pipeline.erasure import Codec
from pipeline.errors import ChunkUnavailable, InsufficientStorage, NodeUnavailable, NotEnoughFragments

log = logging.getLogger(__name__)

WHOLE = (1, 0)
REPORT_EVERY_S = 60.0
REPORTED_MAX = 100_000


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
    return chunk_hash if (k, m) == WHOLE else f"{chunk_hash}.{index}"


def missing_indexes(doc: dict) -> list[int]:
    """Fragment indexes the document records no node for."""
    k, m = layout(doc)
    have = {f["i"] for f in fragments(doc)}
    return [i for i in range(k + m) if i not in have]


def xxh3(data) -> str:
    return xxhash.xxh3_128_hexdigest(data)


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


class ChunkIO:
    def __init__(self, chunks: ChunkStore, spool: Spool, ec: tuple[int, int] = WHOLE):
        self.chunks = chunks
        self.spool = spool
        self.ec = tuple(ec)  # the layout of new chunks
        self.on_damage: Callable[[str], None] | None = None
        # several damaged chunks at once (a read's page): one call instead of one per chunk
        self.on_damages: Callable[[list[str]], None] | None = None
        self._codecs: dict[tuple[int, int], Codec] = {}
        # chunks whose missing fragments this process reported lately: while a node is down every
        # read of its chunks is degraded, and one report (and log line) a minute per chunk is enough
        self._reported = Lru(REPORTED_MAX)  # chunk hash -> monotonic time of its last report

    def codec(self, k: int, m: int) -> Codec:
        c = self._codecs.get((k, m))
        if c is None:
            c = self._codecs[(k, m)] = Codec(k, m)
        return c

    # --- layouts ---------------------------------------------------------------------------

    def new_document(self, chunk_hash: str, size: int, xxh3_hex: str, nodes: list[str],
                     ec: tuple[int, int] | None = None) -> dict:
        """The claim of a new chunk: its layout and the node of each fragment (``nodes[i]`` holds
        fragment ``i``; fewer nodes than fragments leave the last ones missing). Fragment checksums
        are recorded when the fragments are written."""
        k, m = ec or self.ec
        if (k, m) == WHOLE:
            return {"_id": chunk_hash, "size": size, "xxh3": xxh3_hex, "k": 1, "m": 0, "fv": 0,
                    "frags": [{"i": 0, "node": nodes[0], "size": size, "xxh3": xxh3_hex}]}
        fsize = self.codec(k, m).fragment_size(size)
        return {"_id": chunk_hash, "size": size, "xxh3": xxh3_hex, "k": k, "m": m, "fv": 0,
                "frags": [{"i": i, "node": n, "size": fsize, "xxh3": None} for i, n in enumerate(nodes[:k + m])]}

    def fragment_paths(self, doc: dict) -> list[tuple[dict, Path]]:
        k, m = layout(doc)
        return [(f, self.chunks.path(f["node"], fragment_name(doc["_id"], f["i"], k, m)))
                for f in fragments(doc)]

    def is_placed(self, doc: dict) -> bool:
        """Every fragment of the layout is recorded, with its checksum, and on its node with its
        size (a cheap check: no bytes are read)."""
        k, m = layout(doc)
        frags = fragments(doc)
        if len(frags) < k + m or any(f.get("xxh3") is None for f in frags):
            return False
        return all(self.chunks.exists(f["node"], fragment_name(doc["_id"], f["i"], k, m), f["size"])
                   for f in frags)

    def present(self, doc: dict) -> int:
        """How many recorded fragments are on their nodes with their size (no bytes read)."""
        k, m = layout(doc)
        return sum(1 for f in fragments(doc) if f.get("xxh3") is not None and
                   self.chunks.exists(f["node"], fragment_name(doc["_id"], f["i"], k, m), f["size"]))

    def is_readable(self, doc: dict) -> bool:
        """At least k fragments are on their nodes (no bytes read)."""
        return self.present(doc) >= layout(doc)[0]

    # --- writes ----------------------------------------------------------------------------

    def place_from_spool(self, doc: dict, src: Path) -> Placed:
        """Put a durable spooled chunk into its layout. A whole copy is moved (a rename); an
        erasure-coded chunk is read, verified, encoded and its fragments written, each atomically,
        to their nodes, while the spooled copy stays until the file is stored. A fragment whose
        node is down or full is left out (``Placed.failed``).

        Raises FileNotFoundError when the spooled copy is gone (another ingest moved it)."""
        k, m = layout(doc)
        if (k, m) == WHOLE:
            frag = fragments(doc)[0]
            return Placed({self.chunks.place(src, frag["node"], doc["_id"])}, [dict(frag)])
        with open(src, "rb", buffering=0) as f:
            data = f.read()
        if len(data) != doc["size"] or xxh3(data) != doc["xxh3"]:
            raise ChunkUnavailable(doc["_id"], "spool", "spooled chunk does not match its checksum")
        return self.write_fragments(doc, data, {f["i"]: f["node"] for f in fragments(doc)})

    def write_fragments(self, doc: dict, data: bytes, targets: dict[int, str],
                        encoded: list[bytes] | None = None) -> Placed:
        """Encode ``data`` in the document's layout and write fragment ``i`` to ``targets[i]``."""
        k, m = layout(doc)
        pieces = encoded if encoded is not None else self.codec(k, m).encode(data)
        placed = Placed()
        for i, node in sorted(targets.items()):
            piece = pieces[i]
            try:
                placed.dirs.add(self.chunks.write_fragment(node, fragment_name(doc["_id"], i, k, m), piece))
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

    def write(self, doc: dict, data: bytes) -> None:
        """Write a chunk from memory into its layout (repair and tests)."""
        k, m = layout(doc)
        if (k, m) == WHOLE:
            self.chunks.write(fragments(doc)[0]["node"], doc["_id"], data)
            return
        placed = self.write_fragments(doc, data, {f["i"]: f["node"] for f in fragments(doc)})
        for d in placed.dirs:
            fsync_dir(d)

    def delete(self, doc: dict) -> None:
        """Remove every fragment of a chunk: those its document records, and any fragment file of
        it that another node still holds (one a heal or a move wrote before it was interrupted),
        and its held spool copy."""
        k, m = layout(doc)
        if (k, m) != WHOLE:
            self.spool.release(doc["_id"])
        for frag in fragments(doc):
            if frag.get("node") is not None:
                self.chunks.delete(frag["node"], fragment_name(doc["_id"], frag["i"], k, m))
        if (k, m) != WHOLE:
            for node in self.chunks.node_ids:
                for i in range(k + m):
                    self.chunks.delete(node, fragment_name(doc["_id"], i, k, m))

    def delete_fragment(self, doc: dict, frag: dict) -> bool:
        k, m = layout(doc)
        return self.chunks.delete(frag["node"], fragment_name(doc["_id"], frag["i"], k, m))

    def quarantine(self, doc: dict, frag: dict) -> bool:
        k, m = layout(doc)
        return self.chunks.quarantine(frag["node"], fragment_name(doc["_id"], frag["i"], k, m)) is not None

    # --- reads -----------------------------------------------------------------------------

    def check(self, doc: dict, enough: int | None = None) -> FragmentCheck:
        """Read and verify the chunk's fragments in index order (data first), stopping once
        ``enough`` are good (all of them when None)."""
        k, m = layout(doc)
        result = FragmentCheck()
        for frag in sorted(fragments(doc), key=lambda f: f["i"]):
            if enough is not None and len(result.good) >= enough:
                break
            name = fragment_name(doc["_id"], frag["i"], k, m)
            data = self.chunks.read_fragment(frag["node"], name) if frag.get("node") else None
            if data is None:
                result.missing.append(frag)
                continue
            result.bytes_read += len(data)
            if len(data) != frag["size"]:
                result.corrupt.append((frag, f"{len(data)} bytes, expected {frag['size']}"))
            elif frag.get("xxh3") is not None and xxh3(data) != frag["xxh3"]:
                result.corrupt.append((frag, "content does not match its checksum"))
            elif frag.get("xxh3") is None and (k, m) != WHOLE:
                result.corrupt.append((frag, "no checksum recorded"))
            else:
                result.good[frag["i"]] = data
        return result

    def read(self, chunk_hash: str, doc: dict | None, damaged: list[str] | None = None) -> bytes:
        """The chunk's bytes from its layout, verified. ``damaged``: a list that collects the
        hashes of damaged chunks for ``report_damaged`` later, instead of reporting each now."""
        if doc is None:
            raise _unavailable(chunk_hash, None, "no chunk document")
        k, m = layout(doc)
        if (k, m) == WHOLE:
            return self._read_whole(chunk_hash, doc)
        found = self.check(doc, enough=k)
        if len(found.good) < k:
            self._damaged(doc, found, damaged)
            held = self.read_held(doc)
            if held is not None:
                log.warning("chunk %s: %d of the %d fragments needed are readable; served from its held "
                            "spool copy", chunk_hash, len(found.good), k)
                return held
            log.error("chunk %s: %d of the %d fragments needed are readable (%d corrupt, %d missing)", chunk_hash,
                      len(found.good), k, len(found.corrupt), len(found.missing))
            # the reason is one of the fixed few a metric label takes
            raise _unavailable(chunk_hash, ",".join(nodes_of(doc)), "content does not match its checksum"
                               if found.corrupt else "chunk file missing")
        try:
            data = self.codec(k, m).decode(found.good, doc["size"])
        except NotEnoughFragments as exc:
            raise _unavailable(chunk_hash, ",".join(nodes_of(doc)), exc.message) from None
        if xxh3(data) != doc["xxh3"]:
            raise _unavailable(chunk_hash, ",".join(nodes_of(doc)), "decoded content does not match its checksum")
        if found.missing or found.corrupt or len(fragments(doc)) < k + m:
            self._damaged(doc, found, damaged)
        return data

    def _read_whole(self, chunk_hash: str, doc: dict) -> bytes:
        frag, path = self.fragment_paths(doc)[0]
        try:
            with open(path, "rb", buffering=0) as f:
                data = f.read()
        except (FileNotFoundError, NotADirectoryError, KeyError):
            raise _unavailable(chunk_hash, frag["node"], "chunk file missing") from None
        if len(data) != doc["size"] or xxh3(data) != doc["xxh3"]:
            raise _unavailable(chunk_hash, frag["node"], "content does not match its checksum")
        return data

    def _damaged(self, doc: dict, found: FragmentCheck, damaged: list[str] | None = None) -> None:
        now = time.monotonic()
        if not found.corrupt and doc.get("needsHeal"):
            return  # flagged already: its heal is queued or waits for a node to come back
        if not found.corrupt:
            last = self._reported.get(doc["_id"])
            if last is not None and now - last < REPORT_EVERY_S:
                return
            self._reported.put(doc["_id"], now)
        for frag, reason in found.corrupt:
            log.error("chunk %s fragment %d on node %s: %s; quarantined", doc["_id"], frag["i"], frag["node"], reason)
            self.quarantine(doc, frag)
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
        k, m = layout(doc)
        return m > 0 and written < k + 1

    def read_held(self, doc: dict) -> bytes | None:
        """The chunk's held spool copy, verified; None when there is none (or it does not verify)."""
        data = self.spool.read_held(doc["_id"])
        if data is None:
            return None
        if len(data) != doc["size"] or xxh3(data) != doc["xxh3"]:
            log.error("held spool copy of chunk %s does not match its checksum", doc["_id"])
            return None
        return data

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
        if len(data) != size or xxh3(data) != xxh3_hex:
            raise _unavailable(f"{file_id}/{index}", "spool", "spooled chunk does not match its checksum")
        return data


def _unavailable(chunk_hash: str, node: str | None, reason: str) -> ChunkUnavailable:
    log.error("read failed: chunk %s on node %s: %s", chunk_hash, node, reason)
    return ChunkUnavailable(chunk_hash, node, reason)

