"""Read a file back from its chunks, verifying every chunk before its bytes leave.

A file is readable from the moment its upload was acknowledged: a chunk that ingest has not placed
yet is read from the upload's spool (verified like any read); one that ingest moved meanwhile is
read from its layout. A range read finds its first manifest page by byte offset, so it touches
only the pages it needs.
"""
from __future__ import annotations

import logging
from typing import Iterator

from pipeline.cache import Lru
from pipeline.chunkio import ChunkIO
from pipeline.errors import ChunkUnavailable
from pipeline.metadata import CHUNK_STORED, STORED, FileDoc, ManifestPage, MetadataRepository

log = logging.getLogger(__name__)


# The first manifest page of files read lately, in this process. A page never changes once written
# and a file id is never reused, so a copy stays right: the ranged GETs of one download (boto3 sends
# one per 8 MiB) read a file of up to a page's 1,000 chunks without asking MongoDB for its page
# again. A file deleted meanwhile is refused before its pages are looked at.
_first_pages = Lru(32)


def _first_page(repo: MetadataRepository, file_id: str) -> ManifestPage | None:
    page = _first_pages.get(file_id)
    if page is None:
        page = repo.manifest_page(file_id, 0)
        if page is not None:
            _first_pages.put(file_id, page)
    return page


def iter_pages_from(repo: MetadataRepository, f: FileDoc, start: int) -> Iterator[ManifestPage]:
    """The file's manifest pages from the one holding byte ``start``, with their sizes."""
    first = _first_page(repo, f.id)
    if first is not None and first.end_index >= f.chunk_count:  # the only page (most files)
        yield first.sized(f.chunk_size, f.size)
        return
    for page in repo.iter_manifest(f.id, from_page=repo.page_at_offset(f.id, start)):
        yield page.sized(f.chunk_size, f.size)


def iter_file(repo: MetadataRepository, chunkio: ChunkIO, f: FileDoc,
              start: int = 0, stop: int | None = None) -> Iterator[bytes]:
    """Yield bytes ``[start, stop)`` of a readable file, one verified chunk at a time."""
    stop = f.size if stop is None else min(stop, f.size)
    if start >= stop:
        return
    spooled = f.status != STORED
    for page in iter_pages_from(repo, f, start):
        wanted = [(i, off, h, x, n) for i, off, h, x, n in page.entries() if off + n > start and off < stop]
        docs = repo.chunk_docs(h for _, _, h, _, _ in wanted) if wanted else {}
        # damaged chunks of this page (a node is down: all of them) are flagged for heal in one go
        # when the page is done or the read stops, not with a MongoDB update between two chunks
        damaged: list[str] = []
        try:
            for index, offset, h, xxh3, size in wanted:
                data = None
                doc = docs.get(h)
                if spooled and (doc is None or doc.get("state") != CHUNK_STORED):
                    data = chunkio.read_spooled(f.id, index, size, xxh3)
                    if data is None:  # ingest placed it since we looked
                        doc = repo.chunk_docs([h]).get(h)
                if data is None:
                    data = _read_placed(repo, chunkio, h, doc, damaged)
                a = max(start - offset, 0)
                b = min(stop - offset, size)
                yield data if (a == 0 and b == size) else data[a:b]
        finally:
            chunkio.report_damaged(damaged)
        if page.offset is not None and page.offset + page.byte_size >= stop:
            return


def _read_placed(repo: MetadataRepository, chunkio: ChunkIO, h: str, doc: dict | None,
                 damaged: list[str] | None = None) -> bytes:
    """Read a chunk from its layout; when that fails and its document changed since it was read
    (a heal, drain or conversion moved fragments meanwhile), read it again from the new one."""
    try:
        return chunkio.read(h, doc, damaged)
    except ChunkUnavailable:
        fresh = repo.chunk_docs([h]).get(h)
        if fresh is None or doc is None or fresh.get("fv") == doc.get("fv") and fresh.get("frags") == doc.get("frags"):
            raise
        log.info("chunk %s moved during the read; reading its new layout", h)
        return chunkio.read(h, fresh, damaged)
