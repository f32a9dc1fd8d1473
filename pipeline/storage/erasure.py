"""Reed-Solomon erasure coding of one chunk into k data + m parity fragments (pyeclib).

The code is systematic: the payloads of fragments 0..k-1 are the chunk cut in k pieces, so a read
that has every data fragment concatenates them and decodes nothing. Each fragment carries
pyeclib's header (its index and the chunk's size); ``1+0`` is the identity: one fragment that is
the chunk itself, with no header, exactly what a single-copy chunk has always been on disk.

The codec does not verify fragments: pyeclib is configured without checksums, and a corrupt
fragment decodes to wrong bytes silently. Callers checksum every fragment they read (its xxh3
is in the chunk's document) and pass only those that match.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Mapping

from pipeline.errors import NotEnoughFragments

# ISA-L first (the PyPI wheel bundles it); liberasurecode's own RS is the portable fallback.
BACKENDS = ("isa_l_rs_vand", "liberasurecode_rs_vand")
IDENTITY = "identity"

# pyeclib drivers hold C state that does not survive fork(): one per (pid, k, m), made on first use
# in the process that uses it (a Celery pool child, a gunicorn worker), never inherited.
_drivers: dict[tuple[int, int, int], tuple[object, str, int]] = {}
_drivers_lock = threading.Lock()


def _driver(k: int, m: int) -> tuple[object, str, int]:
    """(ECDriver, backend name, header bytes per fragment) for this process."""
    key = (os.getpid(), k, m)
    found = _drivers.get(key)
    if found is not None:
        return found
    with _drivers_lock:
        found = _drivers.get(key)
        if found is None:
            found = _new_driver(k, m)
            for stale in [p for p in _drivers if p[0] != key[0]]:  # inherited from a parent: unusable
                del _drivers[stale]
            _drivers[key] = found
        return found


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


_heap_kept_in: int | None = None  # the process that has called _keep_coding_buffers_in_the_heap


def _keep_coding_buffers_in_the_heap() -> None:
    """With glibc's defaults each encode maps and unmaps fresh pages for liberasurecode's ~3 MiB of
    buffers per 1 MiB chunk: page faults took 15 times the CPU of the Reed-Solomon arithmetic
    (bench/codec.py). Serving such sizes from the heap and keeping freed memory for reuse makes
    encode and degraded decode ~15x cheaper. Only glibc has mallopt; elsewhere nothing changes.

    Called before a process's first coding call, not when it merely opens a codec: the web and S3
    front ends read whole stripes by concatenation and never code unless a fragment is missing, and
    32 MiB of free heap kept per allocation arena raised the web's peak RSS during a 4 GiB upload
    by tens of MiB."""
    global _heap_kept_in
    if _heap_kept_in == os.getpid():
        return
    _heap_kept_in = os.getpid()
    # safe process-wide (web, Celery and CLI processes alike): it picks heap or mmap and when to trim, never contents
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 16 << 20)  # FastCDC chunks reach 4 MiB: their buffers too
        libc.mallopt(_M_TRIM_THRESHOLD, 32 << 20)
    except (OSError, AttributeError):
        pass


def _new_driver(k: int, m: int) -> tuple[object, str, int]:
    from pyeclib.ec_iface import ECDriver, ECDriverError

    failures = []
    for backend in BACKENDS:
        try:
            driver = ECDriver(k=k, m=m, ec_type=backend)
        except ECDriverError as exc:
            failures.append(f"{backend}: {exc}")
            continue
        header = len(driver.encode(b"")[0])  # an empty chunk's fragment is the bare header
        return driver, backend, header
    raise RuntimeError(f"no erasure-coding backend for {k}+{m}: " + "; ".join(failures))


class Codec:
    """Encode a chunk into ``k + m`` fragments and get it back from any ``k`` of them."""

    def __init__(self, k: int, m: int):
        if k < 1 or m < 0 or k + m > 32:
            raise ValueError(f"erasure coding needs k >= 1, m >= 0, k+m <= 32; got {k}+{m}")
        if m == 0 and k > 1:
            raise ValueError(f"{k}+0 would stripe a chunk with no parity; use 1+0 for one whole copy")
        self.k = k
        self.m = m

    def __repr__(self) -> str:
        return f"Codec({self.k}+{self.m})"

    @property
    def identity(self) -> bool:
        return self.m == 0

    @property
    def fragments(self) -> int:
        return self.k + self.m

    @property
    def backend(self) -> str:
        """The pyeclib backend in use here (``isa_l_rs_vand`` or the fallback), or ``identity``."""
        return IDENTITY if self.identity else _driver(self.k, self.m)[1]

    def fragment_size(self, chunk_size: int) -> int:
        """Bytes of each fragment of a chunk of ``chunk_size`` bytes (every fragment has that size)."""
        if chunk_size < 0:
            raise ValueError("chunk size must be >= 0")
        if self.identity:
            return chunk_size
        driver, _, header = _driver(self.k, self.m)
        if chunk_size == 0:
            return header
        return driver.get_segment_info(chunk_size, chunk_size)["fragment_size"]

    def encode(self, data: bytes) -> list[bytes]:
        """The ``k + m`` fragments of ``data``; a fragment's position in the list is its index."""
        if self.identity:
            return [bytes(data)]
        return self._call("encode", _driver(self.k, self.m)[0].encode, bytes(data))

    def decode(self, fragments: Mapping[int, bytes], size: int) -> bytes:
        """The ``size`` bytes of the chunk from any ``k`` of its fragments (index -> bytes).

        With every data fragment present this is their payloads end to end, no decoding."""
        self._check_indexes(fragments)
        if len(fragments) < self.k:
            raise NotEnoughFragments(self._shortage(len(fragments)), have=sorted(fragments), k=self.k)
        if self.identity:
            data = fragments[0]
            if len(data) != size:
                raise NotEnoughFragments(f"the one fragment holds {len(data)} bytes, not {size}")
            return bytes(data)
        _, _, header = _driver(self.k, self.m)
        if all(i in fragments for i in range(self.k)):
            return self._concatenate([fragments[i] for i in range(self.k)], size, header)
        # pyeclib would take any k; give it the data fragments first so that it decodes the least
        chosen = sorted(fragments)[: self.k]
        data = self._call("decode", _driver(self.k, self.m)[0].decode, [fragments[i] for i in chosen])
        if len(data) != size:
            raise NotEnoughFragments(f"fragments {chosen} decode to {len(data)} bytes, not {size}")
        return data

    def reconstruct(self, fragments: Mapping[int, bytes], missing: list[int]) -> dict[int, bytes]:
        """Rebuild the fragments at indexes ``missing`` (for heal) from any ``k`` present ones."""
        self._check_indexes(fragments)
        wanted = sorted(set(missing))
        if not wanted:
            return {}
        bad = [i for i in wanted if not 0 <= i < self.fragments]
        if bad:
            raise ValueError(f"fragment index out of range for {self.k}+{self.m}: {bad}")
        if len(fragments) < self.k:
            raise NotEnoughFragments(self._shortage(len(fragments)), have=sorted(fragments), k=self.k)
        present = [i for i in wanted if i in fragments]
        out = {i: bytes(fragments[i]) for i in present}
        todo = [i for i in wanted if i not in fragments]
        if not todo:
            return out
        if self.identity:  # 1+0 with its one fragment present: nothing was missing after all
            return out
        driver = _driver(self.k, self.m)[0]
        chosen = [fragments[i] for i in sorted(fragments)[: self.k]]
        # pyeclib answers in ascending index order (and sorts the list it is given in place)
        rebuilt = self._call("reconstruct", driver.reconstruct, chosen, list(todo))
        out.update(zip(todo, rebuilt))
        return out

    # --- internals ------------------------------------------------------------------------

    def _check_indexes(self, fragments: Mapping[int, bytes]) -> None:
        bad = [i for i in fragments if not (isinstance(i, int) and 0 <= i < self.fragments)]
        if bad:
            raise ValueError(f"fragment index out of range for {self.k}+{self.m}: {bad}")

    def _shortage(self, have: int) -> str:
        return f"{have} of the {self.k} fragments a {self.k}+{self.m} chunk needs are readable"

    def _concatenate(self, data_fragments: list[bytes], size: int, header: int) -> bytes:
        payload = len(data_fragments[0]) - header
        if payload < 0 or any(len(f) - header != payload for f in data_fragments) or payload * self.k < size:
            raise NotEnoughFragments(f"data fragments of {[len(f) for f in data_fragments]} bytes cannot "
                                     f"hold a {size}-byte chunk")
        pieces = []
        left = size
        for fragment in data_fragments:
            take = min(payload, left)
            pieces.append(memoryview(fragment)[header:header + take])
            left -= take
        return b"".join(pieces)

    def _call(self, what: str, fn, *args):
        from pyeclib.ec_iface import ECDriverError, ECInsufficientFragments, ECInvalidFragmentMetadata

        _keep_coding_buffers_in_the_heap()
        try:
            return fn(*args)
        except (ECInsufficientFragments, ECInvalidFragmentMetadata) as exc:
            raise NotEnoughFragments(f"{self.k}+{self.m} {what}: {exc}") from exc
        except ECDriverError as exc:  # anything else is a bug or a broken installation, not bad data
            raise RuntimeError(f"{self.k}+{self.m} {what} failed in pyeclib: {exc}") from exc
