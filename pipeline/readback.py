"""Read a stored file back from its chunks, verifying every chunk before its bytes leave.

Each chunk is read whole and checked against the xxh3-128 recorded at ingest (computed from the
same bytes as its SHA-256 name); a missing or mismatching chunk raises ``ChunkUnavailable``,
which aborts the transfer, and is logged with its hash and node.
"""
from __future__ import annotations

import logging
from typing import Iterator

import xxhash

from pipeline.chunkstore import ChunkStore
from pipeline.errors import ChunkUnavailable
from pipeline.metadata import FileDoc, MetadataRepository

log = logging.getLogger(__name__)


def read_chunk_verified(chunks: ChunkStore, chunk_hash: str, doc: dict | None) -> bytes:
    if doc is None:
        raise _unavailable(chunk_hash, None, "no chunk document")
    node = doc.get("node")
    try:
        data = chunks.read(node, chunk_hash)
    except (FileNotFoundError, KeyError):
        raise _unavailable(chunk_hash, node, "chunk file missing") from None
    if len(data) != doc["size"] or xxhash.xxh3_128_hexdigest(data) != doc["xxh3"]:
        raise _unavailable(chunk_hash, node, "content does not match its checksum")
    return data


def _unavailable(chunk_hash: str, node: str | None, reason: str) -> ChunkUnavailable:
    log.error("read failed: chunk %s on node %s: %s", chunk_hash, node, reason)
    return ChunkUnavailable(chunk_hash, node, reason)


def iter_file(repo: MetadataRepository, chunks: ChunkStore, f: FileDoc,
              start: int = 0, stop: int | None = None) -> Iterator[bytes]:
    """Yield bytes ``[start, stop)`` of a stored file, one verified chunk at a time."""
    stop = f.size if stop is None else min(stop, f.size)
    if start >= stop:
        return
    first_chunk = start // f.chunk_size
    last_chunk = (stop - 1) // f.chunk_size
    for page in repo.iter_manifest(f.id, from_page=repo.page_containing(f.id, first_chunk)):
        end_index = page.first_index + len(page.hashes)
        if end_index <= first_chunk:
            continue
        if page.first_index > last_chunk:
            return
        lo = max(first_chunk, page.first_index)
        hi = min(last_chunk + 1, end_index)
        wanted = page.hashes[lo - page.first_index: hi - page.first_index]
        docs = repo.chunk_docs(wanted)
        for index in range(lo, hi):
            h = page.hashes[index - page.first_index]
            data = read_chunk_verified(chunks, h, docs.get(h))
            chunk_start = index * f.chunk_size
            a = max(start - chunk_start, 0)
            b = min(stop - chunk_start, len(data))
            yield data if (a == 0 and b == len(data)) else data[a:b]
        if hi > last_chunk:
            return
