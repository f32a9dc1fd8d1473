"""Cut a byte stream into fixed-size chunks on the spool, hashing beside the network read.

The caller's thread only gathers each chunk's bytes and writes its spool file at once when the
chunk is complete (with O_DIRECT where the spool's filesystem takes it: no page-cache page per
byte written, which on this VM cost the web process more kernel CPU than anything else it did). Two hashing threads take the same bytes from bounded queues: one keeps the whole
file's SHA-256, the other each chunk's SHA-256 and xxh3-128 (the fast checksum verified on
every read). ``finish`` waits until every chunk is durable.
hashlib releases the GIL on large buffers, so both hashes run beside the read on another core.
"""
from __future__ import annotations

import hashlib
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import xxhash

from pipeline.storage.chunkstore import (SyncWaves, datasync_file, fsync_dir, raise_if_full, start_writeback,
                                         write_new_file)

_END = object()
QUEUE_DEPTH = 8  # pieces of up to 1 MiB (slices of one socket read): at most ~8 MiB held per hashing thread
SYNC_THREADS = 4  # fdatasyncs in flight at the end of an upload: the journal commits them together
SYNC_BATCH = 256


@dataclass(frozen=True)
class ChunkRecord:
    index: int
    sha256: str
    xxh3: str
    size: int


@dataclass(frozen=True)
class SpoolResult:
    size: int
    sha256: str | None  # None when the writer was asked for no whole-file SHA-256
    chunk_count: int
    md5: str | None = None


class _Hasher:
    """Hashes the pieces it is given, on a thread of its own, or in the caller's thread when
    ``inline`` (a body of one small chunk: starting threads would cost more than its hashing)."""

    def __init__(self, name: str, inline: bool = False):
        self.error: BaseException | None = None
        self.inline = inline
        self.q: queue.Queue = queue.Queue(QUEUE_DEPTH)
        self.thread = None if inline else threading.Thread(target=self.run, name=name, daemon=True)

    def start(self) -> None:
        if self.thread is not None:
            self.thread.start()

    def put(self, item) -> None:
        if self.error is not None:
            raise self.error
        if self.inline:
            self.feed(item)
        else:
            self.q.put(item)

    def end(self) -> None:
        """No more pieces: returns once all of them are hashed."""
        if self.thread is not None:
            self.q.put(_END)
            self.thread.join()

    def run(self) -> None:
        try:
            while (item := self.q.get()) is not _END:
                self.feed(item)
        except BaseException as exc:  # surfaced to the writer on the next put or at finish
            self.error = exc
            while self.q.get() is not _END:
                pass

    def feed(self, item) -> None:
        raise NotImplementedError


class _FileHasher(_Hasher):
    """One whole-file digest (SHA-256 unless the caller has no use for it; MD5 where an S3 ETag
    needs it)."""

    def __init__(self, algorithm: str = "sha256", inline: bool = False):
        super().__init__(f"minis3-file-{algorithm}", inline)
        self.sha = hashlib.new(algorithm)

    def feed(self, item) -> None:
        self.sha.update(item)


class _ChunkHasher(_Hasher):
    """Items: bytes of the current chunk, or (index, size) when a chunk is complete."""

    def __init__(self, on_chunk: Callable[[ChunkRecord], None], inline: bool = False):
        super().__init__("minis3-chunk-hash", inline)
        self.on_chunk = on_chunk
        self.sha, self.xxh = hashlib.sha256(), xxhash.xxh3_128()

    def feed(self, item) -> None:
        if isinstance(item, tuple):
            index, size = item
            self.on_chunk(ChunkRecord(index, self.sha.hexdigest(), self.xxh.hexdigest(), size))
            self.sha, self.xxh = hashlib.sha256(), xxhash.xxh3_128()
        else:
            self.sha.update(item)
            self.xxh.update(item)


class ChunkingWriter:
    """Write a stream into ``chunk_path(i)`` files of ``chunk_size`` bytes each.

    ``on_chunk`` is called, in order and from the hashing thread, as each chunk is complete;
    ``finish`` returns once every chunk is durable.
    """

    def __init__(self, directory: Path, chunk_path: Callable[[int], Path], chunk_size: int,
                 on_chunk: Callable[[ChunkRecord], None], md5: bool = False, sha256: bool = True,
                 size_hint: int | None = None, waves: SyncWaves | None = None):
        """``size_hint``: the body's announced length; a body of one chunk is hashed in the caller's
        thread and made durable without a pool of threads (any length is still handled), and, with
        ``waves``, together with the other small uploads of the moment (one syncfs for all)."""
        self.directory = directory
        self.chunk_path = chunk_path
        self.chunk_size = chunk_size
        self.size = 0
        self._index = 0
        self._fill = 0
        self._pieces: list[bytes | memoryview] = []  # the current chunk's bytes, written when it is complete
        inline = size_hint is not None and size_hint <= self.one_chunk_limit(chunk_size)
        self._waves = waves if inline else None
        self._ticket = self._waves.ticket() if self._waves is not None else 0
        self._file_hasher = _FileHasher(inline=inline) if sha256 else None
        self._chunk_hasher = _ChunkHasher(on_chunk, inline=inline)
        self._md5_hasher = _FileHasher("md5", inline=inline) if md5 else None
        self._hashers = [h for h in (self._file_hasher, self._chunk_hasher, self._md5_hasher) if h is not None]
        for hasher in self._hashers:
            hasher.start()
        self._closed = False

    def one_chunk_limit(self, chunk_size: int) -> int:
        """The longest body that is always cut into one chunk."""
        return chunk_size

    def write(self, data: bytes | memoryview) -> None:
        """Take the next bytes of the stream. Pieces are handed to other threads as they are,
        so they must not change afterwards: bytes, or a memoryview of bytes."""
        if not isinstance(data, (bytes, memoryview)) or (isinstance(data, memoryview) and not data.readonly):
            data = bytes(data)
        offset, end = 0, len(data)
        try:
            while offset < end:
                take = min(end - offset, self.chunk_size - self._fill)
                self._append(data if take == end else data[offset:offset + take])
                offset += take
                if self._fill == self.chunk_size:
                    self._end_chunk()
        except OSError as exc:
            raise_if_full(exc)
            raise

    def _append(self, piece: bytes | memoryview) -> None:
        """Bytes of the current chunk: kept for its spool file, and to every hashing thread."""
        self._pieces.append(piece)
        for hasher in self._hashers:
            hasher.put(piece)
        self._fill += len(piece)
        self.size += len(piece)

    def _flush_pending(self) -> None:
        """Chunk whatever the writer still holds back (content-defined chunking does)."""

    def _end_chunk(self) -> None:
        """The chunk's file, written at once (with O_DIRECT: no page-cache page per byte); when it
        went through the page cache, its writeback starts now unless a sync wave comes soon."""
        path = self.chunk_path(self._index)
        pieces, self._pieces = self._pieces, []
        # a small body goes through the page cache: its sync wave writes it with the others
        if write_new_file(path, pieces, self._fill, direct=self._waves is None) and self._waves is None:
            start_writeback(path)
        self._chunk_hasher.put((self._index, self._fill))
        self._index += 1
        self._fill = 0

    def finish(self) -> SpoolResult:
        """Flush the last chunk, wait for the hashes, make the spool directory durable."""
        try:
            self._flush_pending()
            if self._fill:
                self._end_chunk()
        except OSError as exc:
            self.close()
            raise_if_full(exc)
            raise
        self.close()
        for hasher in self._hashers:
            if hasher.error is not None:
                raise hasher.error
        # writeback of every chunk started when it was complete; wait for all of it here, with
        # several fdatasyncs in flight, rather than stall the stream with one journal commit a chunk
        try:
            if self._waves is not None and self._index <= 1:
                self._waves.wait(self._ticket)
                return self._result()
            if self._index <= 1:
                for i in range(self._index):
                    datasync_file(self.chunk_path(i))
            else:
                with ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="minis3-spool-sync") as pool:
                    for first in range(0, self._index, SYNC_BATCH):  # bounded: a file may have 1M chunks
                        last = min(first + SYNC_BATCH, self._index)
                        list(pool.map(datasync_file, (self.chunk_path(i) for i in range(first, last))))
            fsync_dir(self.directory)
        except OSError as exc:
            raise_if_full(exc)
            raise
        return self._result()

    def _result(self) -> SpoolResult:
        return SpoolResult(self.size, self._file_hasher.sha.hexdigest() if self._file_hasher else None, self._index,
                           self._md5_hasher.sha.hexdigest() if self._md5_hasher else None)

    def close(self) -> None:
        """Stop the hashing threads; safe to call more than once (and on error paths)."""
        if self._closed:
            return
        self._closed = True
        self._pieces = []
        for hasher in self._hashers:
            hasher.end()


class ContentDefinedWriter(ChunkingWriter):
    """Cut where the content says (FastCDC, through ``pyfastcdc``), so that an insertion moves
    only the boundaries near it and the chunks after it deduplicate again.

    A cut FastCDC finds before the end of the bytes it was given is final (a cut at position p
    depends only on the bytes before p); the bytes after the last final cut are held back, at most
    ``HOLD`` bytes, until more arrive or the stream ends. Chunks are zero-copy slices of one joined
    buffer per ``HOLD`` bytes, so that the hashing threads can keep them.
    """

    AVG, MIN, MAX = 1 << 20, 256 << 10, 4 << 20
    HOLD = 8 << 20  # bytes joined and cut at a time: at least MAX, so that some cut is final

    def __init__(self, directory: Path, chunk_path: Callable[[int], Path], chunk_size: int,
                 on_chunk: Callable[[ChunkRecord], None], md5: bool = False, sha256: bool = True,
                 size_hint: int | None = None, waves: SyncWaves | None = None):
        from pyfastcdc import FastCDC

        super().__init__(directory, chunk_path, chunk_size, on_chunk, md5=md5, sha256=sha256, size_hint=size_hint,
                         waves=waves)
        self._cdc = FastCDC(self.AVG, min_size=self.MIN, max_size=self.MAX)
        self._pending: list[bytes | memoryview] = []
        self._pending_size = 0

    def one_chunk_limit(self, chunk_size: int) -> int:
        return self.MIN  # no cut comes before MIN bytes

    def write(self, data: bytes | memoryview) -> None:
        if not isinstance(data, (bytes, memoryview)) or (isinstance(data, memoryview) and not data.readonly):
            data = bytes(data)
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size >= self.HOLD:
            self._cut(final=False)

    def _flush_pending(self) -> None:
        if self._pending_size:
            self._cut(final=True)

    def _cut(self, final: bool) -> None:
        buf = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        view = memoryview(buf)
        done = 0
        try:
            for chunk in self._cdc.cut_buf(view):
                end = chunk.offset + chunk.length
                if end == len(view) and not final:
                    break  # a cut at the end of what we hold may move once more bytes arrive
                self._append(view[chunk.offset:end])
                self._end_chunk()
                done = end
        except OSError as exc:
            raise_if_full(exc)
            raise
        rest = view[done:]
        self._pending = [rest] if len(rest) else []
        self._pending_size = len(rest)
