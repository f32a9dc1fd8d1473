"""Read a file back from its chunks, verifying every chunk before its bytes leave.

A file is readable from the moment its upload was acknowledged: a chunk that ingest has not placed
yet is read from the upload's spool (verified like any read); one that ingest moved meanwhile is
read from its layout. A range read finds its first manifest page by byte offset, so it touches
only the pages it needs.
"""
from __future__ import annotations

import logging
from bisect import bisect_right
from collections import deque
from concurrent.futures import Future
from itertools import islice
from typing import Callable, Iterator, TypeVar

from pipeline.cache import Lru
from pipeline.datapath.pools import process_pool
from pipeline.errors import ChunkUnavailable
from pipeline.metadata.model import CHUNK_STORED, STORED, FileDoc, ManifestPage
from pipeline.metadata.repositories import Metadata
from pipeline.storage.chunkio import ChunkIO

log = logging.getLogger(__name__)
T = TypeVar("T")


# Manifest pages read lately, in this process, by (file id, page number), and the byte offset of
# each page of the multi-page files among them. A page never changes once written and a file id
# is never reused, so a copy stays right: the ranged GETs of one download (boto3 sends one per
# 8 MiB) ask MongoDB for each page they touch once per process, not once per request, and find
# their first page without a query. A file deleted meanwhile is refused before its pages are
# looked at. A page of 1,000 entries takes about 200 KB here.
_pages = Lru(16)
_page_starts = Lru(32)


def _page(meta: Metadata, file_id: str, number: int) -> ManifestPage | None:
    page = _pages.get((file_id, number))
    if page is None:
        page = meta.files.manifest_page(file_id, number)
        if page is not None:
            _pages.put((file_id, number), page)
    return page


def _page_holding(meta: Metadata, file_id: str, offset: int) -> int:
    """The number of the page holding byte ``offset`` (0 for pages written before entries carried
    sizes, which record no offsets)."""
    starts = _page_starts.get(file_id)
    if starts is None:
        starts = meta.files.page_offsets(file_id)
        _page_starts.put(file_id, starts)
    if not starts or any(o is None for o, _ in starts):
        return 0
    i = bisect_right([o for o, _ in starts], offset) - 1
    return starts[max(i, 0)][1]


def iter_pages_from(meta: Metadata, f: FileDoc, start: int) -> Iterator[ManifestPage]:
    """The file's manifest pages from the one holding byte ``start``, with their sizes."""
    number = 0
    first = f.first_page or _page(meta, f.id, 0)
    if first is not None and first.end_index < f.chunk_count:
        number = _page_holding(meta, f.id, start)
    while True:
        page = first if number == 0 else _page(meta, f.id, number)
        if page is None:
            return
        yield page.sized(f.chunk_size, f.size)
        if page.end_index >= f.chunk_count:
            return
        number += 1


def iter_file(meta: Metadata, chunkio: ChunkIO, f: FileDoc,
              start: int = 0, stop: int | None = None) -> Iterator[bytes]:
    """Yield bytes ``[start, stop)`` of a readable file, one verified chunk at a time."""
    stop = f.size if stop is None else min(stop, f.size)
    if start >= stop:
        return
    spooled = f.status != STORED
    for page in iter_pages_from(meta, f, start):
        wanted = [(i, off, h, x, n) for i, off, h, x, n in page.entries() if off + n > start and off < stop]
        docs = meta.chunks.chunk_docs(h for _, _, h, _, _ in wanted) if wanted else {}
        # damaged chunks of this page (a node is down: all of them) are flagged for heal in one go
        # when the page is done or the read stops, not with a MongoDB update between two chunks
        damaged: list[str] = []

        def read(entry: tuple[int, int, str, str, int]) -> bytes:
            index, _, h, xxh3, size = entry
            data = None
            doc = docs.get(h)
            if spooled and (doc is None or doc.get("state") != CHUNK_STORED):
                data = chunkio.read_spooled(f.id, index, size, xxh3)
                if data is None:  # ingest placed it since we looked
                    doc = meta.chunks.chunk_docs([h]).get(h)
            if data is None:
                data = _read_placed(meta, chunkio, h, doc, damaged)
            return data
        try:
            for (index, offset, h, xxh3, size), data in zip(wanted, _ahead(read, wanted)):
                a = max(start - offset, 0)
                b = min(stop - offset, size)
                yield data if (a == 0 and b == size) else data[a:b]
        finally:
            chunkio.report_damaged(damaged)
        if page.offset is not None and page.offset + page.byte_size >= stop:
            return


READ_AHEAD = 4  # chunks read ahead of the one being sent (at most this many MiB held per download)
READ_THREADS = 8  # the process's reader threads, shared by its downloads


def _ahead(read: Callable[[T], bytes], items: list[T]) -> Iterator[bytes]:
    """``read(item)`` of each item in order, the next ``READ_AHEAD`` read meanwhile on this
    process's reader threads: a chunk's fragments come from disk (they are written with O_DIRECT),
    and one read after the other leaves the disk idle while each chunk is verified and sent. A
    read of one chunk stays in the caller's thread. Reads not taken when the caller stops run out
    on their own (at most ``READ_AHEAD``)."""
    if len(items) <= 1:
        yield from map(read, items)
        return
    pool = process_pool("minis3-read", READ_THREADS)
    pending: deque[Future] = deque()
    rest = iter(items)
    for item in islice(rest, READ_AHEAD):
        pending.append(pool.submit(read, item))
    while pending:
        data = pending.popleft().result()
        for item in islice(rest, 1):
            pending.append(pool.submit(read, item))
        yield data


def _read_placed(meta: Metadata, chunkio: ChunkIO, h: str, doc: dict | None,
                 damaged: list[str] | None = None) -> bytes:
    """Read a chunk from its layout; when that fails and its document changed since it was read
    (a heal, drain or conversion moved fragments meanwhile), read it again from the new one."""
    try:
        return chunkio.read(h, doc, damaged)
    except ChunkUnavailable:
        fresh = meta.chunks.chunk_docs([h]).get(h)
        if fresh is None or doc is None or fresh.get("fv") == doc.get("fv") and fresh.get("frags") == doc.get("frags"):
            raise
        log.info("chunk %s moved during the read; reading its new layout", h)
        return chunkio.read(h, fresh, damaged)
