"""The on-disk format: node directories holding chunks, and the spool holding uploads in flight.

This is the only module that knows paths. A whole chunk lives at ``<node>/<h[0:2]>/<h[2:4]>/<h>``,
fragment ``i`` of an erasure-coded chunk beside it as ``<h>.<i>``; an upload being received lives
at ``<spool>/<file id>/<chunk index, 8 digits>``; a spooled chunk kept past its upload while its
erasure-coded chunk has no fragment to spare is held at ``<spool>/.held/<h[0:2]>/<h>``. Writes
are atomic: a temporary name under ``<node>/.tmp``, fsync, rename, and an fsync of the directory
(or, for a batch of writes, one ``syncfs`` per filesystem for all of them: ``SyncBatch``);
fragments are written with O_DIRECT (no page-cache page per byte written) where the node takes it.
A node is up while its directory exists: a write never creates a node's root (an unmounted disk
stays down, it does not fill the disk beneath it).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from pipeline.errors import InsufficientStorage, NodeUnavailable

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
TMP_DIR = ".tmp"  # in-flight writes of a node; what a killed writer left there is swept by GC
QUARANTINE_DIR = ".quarantine"
HELD_DIR = ".held"  # in the spool: spooled chunks kept while their chunk has no fragment to spare
HEX = frozenset("0123456789abcdef")


def parse_name(name: str) -> tuple[str, int | None] | None:
    """(chunk hash, fragment index or None for a whole copy) of a chunk file's name, else None."""
    h, dot, index = name.partition(".")
    if len(h) != 64 or not HEX.issuperset(h):
        return None
    if not dot:
        return h, None
    if not index.isdigit() or len(index) > 2 or (len(index) > 1 and index[0] == "0"):
        return None
    return h, int(index)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
except OSError:
    _libc = None
try:
    _syncfs = _libc.syncfs
    _syncfs.argtypes = (ctypes.c_int,)
except AttributeError:  # not Linux: every write is synced on its own
    _syncfs = None
try:
    _sync_file_range = _libc.sync_file_range
    _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)
except AttributeError:  # not Linux: the later fdatasync does all the work
    _sync_file_range = None
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(path: Path) -> None:
    """Ask the kernel to start writing a file's dirty pages now, without waiting."""
    if _sync_file_range is not None:
        fd = os.open(path, os.O_RDONLY)
        try:
            _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
        finally:
            os.close(fd)


def _sync_filesystem(fd: int) -> None:
    """``syncfs(fd)``: every dirty file and name of the filesystem durable; OSError on a failure."""
    if _syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs: {os.strerror(err)}")


class SyncBatch:
    """Writes made durable together: one ``syncfs`` per filesystem they went to, instead of an
    fsync of every file and of every directory that got a name (ingest writes three fragments per
    chunk, each in a directory of its own: six journal commits a chunk).

    ``watch(dir)`` before a write opens that directory's filesystem once per batch; ``commit()``
    then syncs each watched filesystem: every file written and every name made on it since the
    watch is durable when it returns, and a write-back error since the watch raises (syncfs
    reports those since Linux 5.8). ``close()`` releases the descriptors. Not shared between threads
    while it is being watched and committed from one: ingest's placement threads each watch; the
    caller commits after they are done."""

    available = _syncfs is not None

    def __init__(self):
        self._fds: dict[int, int] = {}  # st_dev -> an open directory on that filesystem
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def watch(self, directory) -> None:
        key = str(directory)
        if key in self._seen:
            return
        fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
        dev = os.fstat(fd).st_dev
        with self._lock:
            self._seen.add(key)
            if dev not in self._fds:
                self._fds[dev], fd = fd, -1
        if fd >= 0:
            os.close(fd)

    def commit(self) -> None:
        for fd in list(self._fds.values()):
            _sync_filesystem(fd)

    def close(self) -> None:
        with self._lock:
            fds, self._fds = list(self._fds.values()), {}
        for fd in fds:
            os.close(fd)

    def __enter__(self) -> SyncBatch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SyncWaves:
    """Group commit of small writes to one filesystem: threads that each need their own writes
    durable are served by one ``syncfs`` per wave, instead of an fdatasync of each file and an
    fsync of its directory (two journal commits for every small upload).

    ``ticket()`` before the first write, ``wait(ticket)`` after the last: it returns once a syncfs
    that started after the call has ended, so every write made before it is durable. A wave
    whose syncfs fails fails its waiters, and every writer holding a ticket taken before that
    failure fails too (the error may have been its data's, reported to a wave it was not in).
    The descriptor is this process's own (opened after a fork), so that no other process takes
    a write-back error in its place."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._cond = threading.Condition()
        self._fd: tuple[int, int] | None = None  # (pid, descriptor)
        self._started = 0  # waves started
        self._done = 0  # the last wave ended
        self._running = False
        self._failures = 0
        self._error: OSError | None = None

    def ticket(self) -> int:
        self._descriptor()  # opened before the writes it answers for
        with self._cond:
            return self._failures

    def wait(self, ticket: int) -> None:
        with self._cond:
            target = self._started + 1  # a wave that starts after this call
            while self._done < target:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                self._started += 1
                wave = self._started
                self._cond.release()
                try:
                    error = self._sync()
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._done = wave
                    self._cond.notify_all()
                if error is not None:
                    self._failures += 1
                    self._error = error
            if self._failures != ticket:
                raise OSError(self._error.errno, f"a sync of {self.directory} failed since this write began: "
                                                 f"{self._error.strerror}")

    def _descriptor(self) -> int:
        if self._fd is None or self._fd[0] != os.getpid():
            self._fd = (os.getpid(), os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY))
        return self._fd[1]

    def _sync(self) -> OSError | None:
        try:
            _sync_filesystem(self._descriptor())
        except OSError as exc:
            return exc
        return None


def datasync_file(path: Path) -> None:
    """Make a file's bytes (and the size needed to read them back) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def copy_durably(src: Path, final: Path) -> None:
    """Copy ``src`` to ``final`` through a temporary name beside it, fsynced, then renamed: ``final``
    is never half-written (the caller fsyncs the directory)."""
    tmp = final.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        os.rename(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def raise_if_full(exc: OSError) -> None:
    """Turn ENOSPC/EDQUOT into the domain's out-of-space error."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise InsufficientStorage(f"no space left on device: {exc.filename or ''}".strip()) from exc


_O_DIRECT = getattr(os, "O_DIRECT", 0)
_ALIGN = 4096  # O_DIRECT's alignment of buffer, offset and length on every common filesystem
DIRECT_BUFFER = 1 << 20  # each thread's aligned buffer; a longer file borrows one of its size
_direct_buffer = threading.local()


def _aligned_buffer(local: threading.local, size: int) -> mmap.mmap:
    """A page-aligned buffer of at least ``size`` bytes: the thread's own (``DIRECT_BUFFER``, kept in
    ``local``), or one borrowed for a longer transfer, which ``_release`` closes."""
    if size > DIRECT_BUFFER:
        return mmap.mmap(-1, size)
    buf = getattr(local, "buf", None)
    if buf is None:
        buf = local.buf = mmap.mmap(-1, DIRECT_BUFFER)
    return buf


def _release(local: threading.local, buf: mmap.mmap) -> None:
    if buf is not getattr(local, "buf", None):
        buf.close()


def _write_direct(fd: int, pieces: Sequence, size: int) -> None:
    """Write ``pieces`` (``size`` bytes in all) to a file opened with O_DIRECT: their whole
    4096-byte blocks through one page-aligned buffer per thread, then the last partial block through
    the page cache (O_DIRECT cleared): one cached page per file instead of one per 4 KiB written.
    On this VM each fresh page-cache page faulted into the host, and written fragments were most of
    the worker's kernel CPU (bench/ingest_cpu.py), as spooled chunks were of the web's."""
    whole = size - size % _ALIGN
    buf = _aligned_buffer(_direct_buffer, size)
    try:
        pos = 0
        for piece in pieces:
            n = len(piece)
            buf[pos:pos + n] = piece
            pos += n
        with memoryview(buf) as view:
            done = 0
            while done < whole:  # O_DIRECT writes whole blocks; a short one ends on a block too
                done += os.write(fd, view[done:whole])
            if whole < size:
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)
                done = whole
                while done < size:
                    done += os.write(fd, view[done:size])
    finally:
        _release(_direct_buffer, buf)


_buffered_roots: set[str] = set()  # directories (a node, the spool) whose filesystem refused O_DIRECT


def _open_new(path, flags: int, direct: bool, root: str) -> tuple[int, bool]:
    """(descriptor, written with O_DIRECT) of a new file under ``root``: with O_DIRECT when ``direct``
    and ``root``'s filesystem takes it; the first refusal (EINVAL: tmpfs, some network filesystems)
    is remembered, and that root's files go through the page cache from then on."""
    if direct and _O_DIRECT and root not in _buffered_roots:
        try:
            return os.open(path, flags | _O_DIRECT, 0o644), True
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            _buffered_roots.add(root)
            log.info("%s refuses O_DIRECT: its files are written through the page cache", root)
            flags &= ~os.O_EXCL  # the refused open may have created the file; the name is ours
    return os.open(path, flags, 0o644), False


def _write_pieces(fd: int, pieces: Sequence, size: int, direct: bool) -> None:
    """Write ``pieces`` (``size`` bytes in all) to a new file opened by ``_open_new``."""
    if direct:
        _write_direct(fd, pieces, size)
        return
    for piece in pieces:
        view = memoryview(piece)
        while view:
            view = view[os.write(fd, view):]


DIRECT_READ_MIN = 64 * 1024  # a shorter file is read through the page cache
_direct_read_buffer = threading.local()


def read_whole(path: str, root: str) -> bytes:
    """A whole file's bytes. A file of ``DIRECT_READ_MIN`` bytes or more is read with O_DIRECT where
    ``root``'s filesystem takes it, into one page-aligned buffer per thread, like the writes: its
    bytes were written around the page cache, and reading them through it would fill a fresh
    page-cache page for every 4 KiB read (on this VM each one faults into the host: the first
    download after an upload cost twice the CPU of the second). Shorter files (a small object's
    fragments, written through the page cache) are read through it."""
    if _O_DIRECT and root not in _buffered_roots:
        try:
            return _read_around_the_cache(path)
        except OSError as exc:  # EINVAL: O_DIRECT refused at the open or, on some FUSE filesystems, the read
            if exc.errno != errno.EINVAL:
                raise
            _buffered_roots.add(root)
            log.info("%s refuses O_DIRECT reads: its files are read through the page cache", root)
    with open(path, "rb", buffering=0) as f:
        return f.read()


def _read_around_the_cache(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | _O_DIRECT)
    try:
        size = os.fstat(fd).st_size
        if size >= DIRECT_READ_MIN:
            return _read_direct(fd, size)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)
        with open(fd, "rb", buffering=0, closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def _read_direct(fd: int, size: int) -> bytes:
    """Read a file opened with O_DIRECT: whole blocks into an aligned buffer (a read may ask past the
    end: it stops there), then one copy out."""
    length = -(-size // _ALIGN) * _ALIGN
    buf = _aligned_buffer(_direct_read_buffer, length)
    try:
        with memoryview(buf) as view:
            done = 0
            while done < length:
                n = os.preadv(fd, [view[done:length]], done)
                done += n
                if n == 0 or done % _ALIGN:  # the end of the file (or it shrank meanwhile)
                    break
            return bytes(view[:done])
    finally:
        _release(_direct_read_buffer, buf)


def write_new_file(path: Path, pieces: Sequence, size: int, direct: bool = True) -> bool:
    """Create ``path`` holding ``pieces`` (``size`` bytes in all), not synced (the caller fdatasyncs
    it). Written with O_DIRECT (see ``_write_direct``) where the filesystem takes it, the file is at
    least a block long and the caller wants it (``direct``); through the page cache otherwise: then
    True, and the caller may start its writeback."""
    root = os.path.dirname(os.path.dirname(path))
    fd, direct = _open_new(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, direct and size >= _ALIGN, root)
    try:
        _write_pieces(fd, pieces, size, direct)
    finally:
        os.close(fd)
    return not direct


@dataclass(frozen=True)
class StoredChunk:
    node: str
    chunk_hash: str
    path: Path
    size: int
    mtime: float


class ChunkStore:
    """Chunks on node directories. Node ids are the directories' base names."""

    def __init__(self, node_dirs: Sequence[Path]):
        self.node_dirs = {Path(d).name: Path(d) for d in node_dirs}
        if len(self.node_dirs) != len(node_dirs):
            raise ValueError("node directories must have distinct base names")
        self.node_ids = list(self.node_dirs)
        self._node_roots = {n: str(d) for n, d in self.node_dirs.items()}

    def ensure_dirs(self, keep_down: Iterable[str] = ()) -> None:
        """Create the node directories, except those of ``keep_down``: nodes that held data and lost
        their directory are down until an operator puts one back."""
        skip = set(keep_down)
        for node, d in self.node_dirs.items():
            if node not in skip:
                d.mkdir(parents=True, exist_ok=True)

    def _path_str(self, node: str, chunk_hash: str) -> str:
        # string paths: a re-upload checks a thousand chunks per page, Path objects cost more
        return f"{self._node_roots[node]}/{chunk_hash[0:2]}/{chunk_hash[2:4]}/{chunk_hash}"

    def path(self, node: str, chunk_hash: str) -> Path:
        return Path(self._path_str(node, chunk_hash))

    def is_up(self, node: str) -> bool:
        """The node's directory is there (a removed or unmounted node is down)."""
        try:
            return os.path.isdir(self._node_roots[node])
        except KeyError:
            return False

    def watch(self, batch: SyncBatch, node: str) -> None:
        """Have ``batch`` make durable what is written to ``node`` (NodeUnavailable when it is down)."""
        try:
            batch.watch(self._node_roots[node])
        except FileNotFoundError:
            raise self._down(node) from None

    def _down(self, node: str) -> NodeUnavailable:
        return NodeUnavailable(f"node {node} is down (no directory {self._node_roots.get(node)})", node=node)

    def _parent(self, node: str, name: str) -> Path:
        """The directory a chunk file goes in, created below the node's root (never the root)."""
        if not self.is_up(node):
            raise self._down(node)
        parent = self.path(node, name).parent
        try:  # level by level, never ``parents=True``: a node taken away meanwhile stays away
            parent.parent.mkdir(exist_ok=True)
            parent.mkdir(exist_ok=True)
        except FileNotFoundError:
            raise self._down(node) from None
        except OSError as exc:
            raise_if_full(exc)
            raise
        return parent

    def write_fragment(self, node: str, name: str, data, batch: SyncBatch | None = None) -> Path:
        """Write one chunk file atomically (temporary name, fsync, rename); returns the directory
        that the caller fsyncs (once for many files). Raises NodeUnavailable or InsufficientStorage.
        With a ``batch`` the file is not fsynced here: ``batch.commit()`` makes it and its
        directory durable, with the batch's other writes.

        The file's directory is made only when the rename finds it missing: a mkdir for every
        fragment was a sixth of ingest's CPU (bench/profile_api.py)."""
        if not self.is_up(node):
            raise self._down(node)
        parent = self.path(node, name).parent
        tmpdir = self.node_dirs[node] / TMP_DIR
        tmp = tmpdir / f"{name}.{uuid.uuid4().hex[:12]}"
        try:
            if batch is not None:
                self.watch(batch, node)
            try:
                fd, direct = self._create(node, tmp, len(data) >= _ALIGN)
            except FileNotFoundError:
                try:
                    tmpdir.mkdir(exist_ok=True)
                except FileNotFoundError:
                    raise self._down(node) from None
                fd, direct = self._create(node, tmp, len(data) >= _ALIGN)
            try:
                _write_pieces(fd, [data], len(data), direct)
                if batch is None:
                    os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.rename(tmp, parent / name)
            except FileNotFoundError:  # the first file of its directory
                self._parent(node, name)
                os.rename(tmp, parent / name)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise_if_full(exc)
            if not self.is_up(node):
                raise NodeUnavailable(f"node {node} went down during a write", node=node) from exc
            raise
        return parent

    def _create(self, node: str, tmp: Path, direct: bool = True) -> tuple[int, bool]:
        """(descriptor, written with O_DIRECT) of a new temporary file. O_DIRECT where the node's
        filesystem takes it, buffered writes where it refuses (tmpfs): see ``_write_direct``; and
        for a fragment shorter than one block (``direct`` False), which would be written through
        the page cache anyway."""
        return _open_new(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, direct, self._node_roots[node])

    def read_fragment(self, node: str, name: str) -> bytes | None:
        """A chunk file's bytes, or None when it is not there (or its node cannot be read)."""
        try:
            return read_whole(self._path_str(node, name), self._node_roots[node])
        except (FileNotFoundError, NotADirectoryError, KeyError):
            return None
        except OSError as exc:  # an I/O error of a failing disk is a missing fragment, not a crash
            log.error("cannot read %s on node %s: %s", name, node, exc)
            return None

    def temporaries(self, node: str) -> Iterator[StoredChunk]:
        """Files of writes in flight (or left by a killed writer) on a node."""
        root = self.node_dirs[node] / TMP_DIR
        try:
            entries = list(os.scandir(root))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            yield StoredChunk(node, entry.name, Path(entry.path), st.st_size, st.st_mtime)

    def sweep_temporaries(self, older_than: float) -> int:
        """Remove temporaries last written before ``older_than`` (epoch): their writer is gone."""
        removed = 0
        for node in self.node_ids:
            for entry in self.temporaries(node):
                if entry.mtime < older_than:
                    try:
                        entry.path.unlink()
                        removed += 1
                    except FileNotFoundError:
                        pass
        return removed

    def exists(self, node: str, chunk_hash: str, size: int | None = None) -> bool:
        try:
            st = os.stat(self._path_str(node, chunk_hash))
        except (FileNotFoundError, KeyError):
            return False
        return size is None or st.st_size == size

    def place(self, src: Path, node: str, chunk_hash: str, batch: SyncBatch | None = None) -> Path:
        """Move a durable spooled chunk to its final name; returns the directory to fsync (or that
        ``batch.commit()`` makes durable).

        Same filesystem: a rename. Otherwise: copy to a temporary name, fsync, rename.
        Concurrent placements of the same chunk leave one file: renames replace atomically.
        """
        if batch is not None:
            self.watch(batch, node)
        final = self._parent(node, chunk_hash) / chunk_hash
        try:
            try:
                os.rename(src, final)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                copy_durably(src, final)
                src.unlink(missing_ok=True)
        except OSError as exc:
            raise_if_full(exc)
            raise
        return final.parent

    def write(self, node: str, chunk_hash: str, data: bytes) -> None:
        """Write a chunk from memory atomically (repair and tests)."""
        final = self._parent(node, chunk_hash) / chunk_hash
        tmp = final.parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, final)
            fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise_if_full(exc)
            raise

    def read(self, node: str, chunk_hash: str) -> bytes:
        with open(self.path(node, chunk_hash), "rb", buffering=0) as f:
            return f.read()

    def delete(self, node: str, chunk_hash: str) -> bool:
        try:
            self.path(node, chunk_hash).unlink()
            return True
        except (FileNotFoundError, KeyError):
            return False

    def quarantine(self, node: str, chunk_hash: str) -> Path | None:
        """Move a corrupt chunk aside (never delete it) so that an operator can look at it."""
        src = self.path(node, chunk_hash)
        qdir = self.node_dirs[node] / QUARANTINE_DIR
        try:
            qdir.mkdir(exist_ok=True)
            dst = qdir / f"{chunk_hash}.q{time.time_ns()}"
            os.rename(src, dst)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot quarantine %s on node %s: %s", chunk_hash, node, exc)
            return None
        return dst

    def is_chunk_file(self, entry: StoredChunk) -> bool:
        """A file named by a SHA-256 (a whole copy, or ``<sha256>.<i>`` a fragment) at that hash's
        own place (not a temporary or stray file)."""
        name = entry.chunk_hash
        return parse_name(name) is not None and entry.node in self.node_dirs \
            and entry.path == self.path(entry.node, name)

    def quarantined(self, node: str) -> list[str]:
        """Names of the files in a node's quarantine."""
        try:
            return sorted(e.name for e in os.scandir(self.node_dirs[node] / QUARANTINE_DIR))
        except (FileNotFoundError, KeyError):
            return []

    def sha256(self, entry: StoredChunk) -> str:
        digest = hashlib.sha256()
        with open(entry.path, "rb", buffering=0) as f:
            while block := f.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()

    def discard_stray(self, entry: StoredChunk, is_claimed: Callable[[], bool]) -> bool:
        """Remove a file that no chunk document claims. It is moved aside first and put back
        when ``is_claimed()`` says a claim appeared meanwhile (an ingest may have counted on it)."""
        qdir = self.node_dirs[entry.node] / QUARANTINE_DIR
        qdir.mkdir(exist_ok=True)
        aside = qdir / f"{TMP_PREFIX}stray-{uuid.uuid4().hex}"
        try:
            os.rename(entry.path, aside)
        except FileNotFoundError:
            return False
        try:
            if self.is_chunk_file(entry) and is_claimed():
                try:
                    os.link(aside, entry.path)
                except FileExistsError:  # the claimer wrote its own copy
                    pass
                return False
            return True
        finally:
            aside.unlink(missing_ok=True)

    def iter_node(self, node: str) -> Iterator[StoredChunk]:
        """Every chunk file (and stray temporary file) under a node, without loading them."""
        root = self.node_dirs[node]
        if not root.is_dir():
            return
        for top in sorted(os.scandir(root), key=lambda e: e.name):
            if not top.is_dir() or len(top.name) != 2:
                continue
            for mid in os.scandir(top.path):
                if not mid.is_dir():
                    continue
                for entry in os.scandir(mid.path):
                    if entry.is_file():
                        st = entry.stat()
                        yield StoredChunk(node, entry.name, Path(entry.path), st.st_size, st.st_mtime)

    def iter_all(self) -> Iterator[StoredChunk]:
        for node in self.node_ids:
            yield from self.iter_node(node)

    def node_status(self, node: str, full_below: int = 0) -> dict:
        """``state``: up, down (no directory, or not writable) or full (under ``full_below`` bytes free)."""
        root = self.node_dirs[node]
        ok = root.is_dir() and os.access(root, os.W_OK)
        status = {"node": node, "path": str(root), "ok": ok, "state": "up" if ok else "down"}
        if root.is_dir():
            try:
                usage = shutil.disk_usage(root)
            except OSError:
                return {**status, "ok": False, "state": "down"}
            status.update(freeBytes=usage.free, totalBytes=usage.total)
            if ok and usage.free < full_below:
                status["state"] = "full"
        return status


class _Reaper:
    """Unlinks set-aside directories on one background thread per process."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.queue: queue.Queue = queue.Queue()

    def submit(self, path: Path) -> None:
        with self.lock:
            if self.pid != os.getpid():  # first use, or first use after a fork: a thread of our own
                self.pid = os.getpid()
                self.queue = queue.Queue()
                threading.Thread(target=self._run, args=(self.queue,), name="minis3-spool-reaper",
                                 daemon=True).start()
        self.queue.put(path)

    @staticmethod
    def _run(paths: queue.Queue) -> None:
        while True:
            shutil.rmtree(paths.get(), ignore_errors=True)


_reaper = _Reaper()


def _unlink_flat(directory: Path) -> bool:
    """Remove a directory of files (a spool upload's); False when it holds anything else."""
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:  # gone meanwhile (a twin ingest's removal)
                    pass
        os.rmdir(directory)
    except FileNotFoundError:
        return True
    except OSError:  # a subdirectory, or a file that cannot go: the general way
        return False
    return True


class Spool:
    """Uploads in flight: one directory per file id, one file per chunk index.

    A removed upload's directory leaves its name at once (a rename into ``<spool>.trash``, beside
    the spool on the same filesystem) and its files are unlinked in the background: unlinking a
    gigabyte of chunk files takes longer than ingesting them, and nothing needs to wait for it.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.trash = self.root.with_name(self.root.name + ".trash")
        # small uploads made durable together (None where there is no syncfs)
        self.waves = SyncWaves(self.root) if SyncBatch.available else None

    def ensure_dir(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.trash.is_dir():  # left by a process that stopped before its reaper was done
            for entry in os.scandir(self.trash):
                _reaper.submit(Path(entry.path))

    def upload_dir(self, file_id: str) -> Path:
        return self.root / file_id

    def chunk_path(self, file_id: str, index: int) -> Path:
        return self.root / file_id / f"{index:08d}"

    def create(self, file_id: str) -> Path:
        d = self.upload_dir(file_id)
        try:
            d.mkdir(parents=True)
        except OSError as exc:
            raise_if_full(exc)
            raise
        return d

    def link(self, src_id: str, src_index: int, dst_id: str, dst_index: int) -> bool:
        """Give a spooled chunk a second name in another upload's directory (no byte is copied);
        False when the source no longer holds it (its ingest moved it, or it was removed) or the
        filesystem has no hard links."""
        try:
            os.link(self.chunk_path(src_id, src_index), self.chunk_path(dst_id, dst_index))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise_if_full(exc)
            if exc.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                log.warning("the spool cannot hard-link %s (%s): the source is ingested instead", src_id, exc)
                return False  # a filesystem without hard links: the caller ingests the source
            raise
        return True

    def sync(self, file_id: str) -> None:
        """Make an upload directory's names durable."""
        fsync_dir(self.upload_dir(file_id))

    def remove(self, file_id: str, small: bool = False) -> None:
        """The upload's directory goes (its name at once, its files in the background). ``small``:
        an upload of a few chunks is unlinked here and now, cheaper than handing it over."""
        src = self.upload_dir(file_id)
        if small and _unlink_flat(src):
            return
        aside = self.trash / f"{file_id}.{uuid.uuid4().hex[:12]}"
        try:
            self.trash.mkdir(exist_ok=True)
            os.rename(src, aside)
        except FileNotFoundError:
            return
        except OSError:  # no room for the trash directory, or another filesystem: unlink here
            shutil.rmtree(src, ignore_errors=True)
            return
        _reaper.submit(aside)

    def exists(self, file_id: str) -> bool:
        return self.upload_dir(file_id).is_dir()

    # --- held copies: spooled chunks kept past their upload while their chunk has no redundancy ---

    def held_path(self, chunk_hash: str) -> Path:
        """``<spool>/.held/<h[0:2]>/<h>``: in the spool (one filesystem, so a hard link; shared by
        every host that mounts the spool), under a name no upload has (``entries`` skips it)."""
        return self.held_root / chunk_hash[0:2] / chunk_hash

    @property
    def held_root(self) -> Path:
        return self.root / HELD_DIR

    def hold(self, file_id: str, index: int, chunk_hash: str) -> Path:
        """Keep the spooled chunk ``index`` of an upload under its hash after the upload's spool goes
        (a hard link, else a copy); returns the directory the caller fsyncs."""
        dst = self.held_path(chunk_hash)
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(self.chunk_path(file_id, index), dst)
            except FileExistsError:
                pass  # held already (another upload of the same content, or a rerun)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                copy_durably(self.chunk_path(file_id, index), dst)
        except OSError as exc:
            raise_if_full(exc)
            raise
        return dst.parent

    def read_held(self, chunk_hash: str) -> bytes | None:
        try:
            with open(self.held_path(chunk_hash), "rb", buffering=0) as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def is_held(self, chunk_hash: str) -> bool:
        return self.held_path(chunk_hash).exists()

    def release(self, chunk_hash: str) -> bool:
        """Drop a held copy (its chunk is fully redundant again, or gone)."""
        try:
            self.held_path(chunk_hash).unlink()
            return True
        except FileNotFoundError:
            return False

    def held(self) -> Iterator[tuple[str, float]]:
        """(chunk hash, time it was held: the link's ctime) of every held copy."""
        try:
            tops = sorted(os.scandir(self.held_root), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for top in tops:
            if not top.is_dir():
                continue
            for entry in os.scandir(top.path):
                if parse_name(entry.name) is not None and "." not in entry.name:
                    try:
                        yield entry.name, entry.stat().st_ctime
                    except FileNotFoundError:
                        continue

    def entries(self) -> Iterable[tuple[str, float]]:
        """(file id, last modification time) of every spooled upload."""
        if not self.root.is_dir():
            return []
        out = []
        for entry in os.scandir(self.root):
            if entry.is_dir() and not entry.name.startswith("."):  # .held is no upload
                try:
                    out.append((entry.name, entry.stat().st_mtime))
                except FileNotFoundError:
                    continue
        return out
