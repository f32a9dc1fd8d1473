"""The erasure codec alone: byte-exact round trips from any k fragments, corruption found by the
caller's per-fragment checksum, heal's reconstruct, and one driver per process."""
from __future__ import annotations

import itertools
import multiprocessing
import random

import pytest
import xxhash

from pipeline.errors import NotEnoughFragments
from pipeline.storage import erasure
from pipeline.storage.erasure import Codec

MiB = 1 << 20
LAYOUTS = [(2, 1), (4, 2), (1, 0)]
SIZES = [0, 1, 4095, MiB, MiB + 1]


def chunk(size: int, seed: int = 0) -> bytes:
    return random.Random(f"{size}:{seed}").randbytes(size)


def checksum(fragment: bytes) -> str:
    """What the chunk's document records for each fragment when it is written."""
    return xxhash.xxh3_128_hexdigest(fragment)


def verified(read: dict[int, bytes], recorded: dict[int, str]) -> dict[int, bytes]:
    """The caller's side of a read: keep only the fragments whose bytes match their own checksum."""
    return {i: f for i, f in read.items() if checksum(f) == recorded[i]}


@pytest.mark.parametrize("size", SIZES, ids=[f"{s}B" for s in SIZES])
@pytest.mark.parametrize("k,m", LAYOUTS, ids=[f"{k}+{m}" for k, m in LAYOUTS])
def test_every_subset_of_k_fragments_decodes_byte_exact(k, m, size):
    codec = Codec(k, m)
    data = chunk(size)
    fragments = codec.encode(data)
    assert len(fragments) == k + m
    assert {len(f) for f in fragments} == {codec.fragment_size(size)}
    for subset in itertools.combinations(range(k + m), k):
        assert codec.decode({i: fragments[i] for i in subset}, size) == data, subset


@pytest.mark.parametrize("k,m", [(2, 1), (4, 2)], ids=["2+1", "4+2"])
def test_all_data_fragments_present_is_concatenation_without_decoding(k, m, monkeypatch):
    codec = Codec(k, m)
    data = chunk(MiB + 1, seed=1)
    fragments = codec.encode(data)
    driver = erasure._driver(k, m)[0]

    def refuse(*args, **kwargs):
        raise AssertionError("decoded although every data fragment was there")

    monkeypatch.setattr(driver, "decode", refuse)
    assert codec.decode({i: fragments[i] for i in range(k)}, len(data)) == data
    assert codec.decode(dict(enumerate(fragments)), len(data)) == data
    with pytest.raises(AssertionError, match="decoded although"):  # a missing data fragment does decode
        codec.decode({i: fragments[i] for i in range(1, k + m)}, len(data))


def test_one_plus_zero_is_the_chunk_itself():
    codec = Codec(1, 0)
    data = chunk(4095)
    assert codec.encode(data) == [data]
    assert codec.fragment_size(4095) == 4095
    assert codec.backend == "identity"
    assert codec.reconstruct({0: data}, [0]) == {0: data}
    with pytest.raises(NotEnoughFragments):
        codec.decode({}, 4095)


@pytest.mark.parametrize("k,m", [(2, 1), (4, 2)], ids=["2+1", "4+2"])
@pytest.mark.parametrize("bad", ["data", "parity"])
def test_a_corrupt_fragment_fails_its_own_checksum_and_the_others_decode_exact(k, m, bad):
    codec = Codec(k, m)
    data = chunk(MiB, seed=2)
    fragments = codec.encode(data)
    recorded = {i: checksum(f) for i, f in enumerate(fragments)}  # stored beside each fragment

    victim = 0 if bad == "data" else k
    flipped = bytearray(fragments[victim])
    flipped[len(flipped) // 2] ^= 0x01  # one bit in the payload, header intact
    read = dict(enumerate(fragments))
    read[victim] = bytes(flipped)

    good = verified(read, recorded)
    assert sorted(set(read) - set(good)) == [victim]
    assert codec.decode(good, len(data)) == data
    if bad == "data":  # why the checksum is needed: the codec itself takes the bad bytes as they are
        unchecked = {i: read[i] for i in range(k)}
        assert codec.decode(unchecked, len(data)) != data


@pytest.mark.parametrize("k,m", [(2, 1), (4, 2)], ids=["2+1", "4+2"])
@pytest.mark.parametrize("size", [1, 4095, MiB + 1], ids=["1B", "4095B", "1MiB+1"])
def test_reconstruct_rebuilds_the_original_fragments(k, m, size):
    codec = Codec(k, m)
    fragments = codec.encode(chunk(size, seed=3))
    for lost in range(1, m + 1):
        for missing in itertools.combinations(range(k + m), lost):
            present = {i: f for i, f in enumerate(fragments) if i not in missing}
            rebuilt = codec.reconstruct(present, list(missing))
            assert rebuilt == {i: fragments[i] for i in missing}, missing


@pytest.mark.parametrize("k,m", [(2, 1), (4, 2)], ids=["2+1", "4+2"])
def test_fewer_than_k_fragments_is_not_enough_fragments(k, m):
    codec = Codec(k, m)
    data = chunk(4095, seed=4)
    fragments = codec.encode(data)
    few = {i: fragments[i] for i in range(m + 1, k + m)}  # k - 1 of them
    assert len(few) == k - 1
    with pytest.raises(NotEnoughFragments) as err:
        codec.decode(few, len(data))
    assert err.value.code == "not_enough_fragments"
    with pytest.raises(NotEnoughFragments):
        codec.reconstruct(few, [0])


def test_fragments_of_another_size_are_refused_not_misread():
    codec = Codec(2, 1)
    fragments = codec.encode(chunk(4095, seed=5))
    with pytest.raises(NotEnoughFragments):
        codec.decode({0: fragments[0], 1: fragments[1]}, MiB)
    with pytest.raises(NotEnoughFragments):
        codec.decode({1: fragments[1], 2: fragments[2]}, MiB)


@pytest.mark.parametrize("layout", [(0, 1), (2, 0), (30, 3), (1, -1)])
def test_impossible_layouts_are_refused(layout):
    with pytest.raises(ValueError):
        Codec(*layout)


def test_bad_fragment_index_is_refused():
    codec = Codec(2, 1)
    fragments = codec.encode(b"abc")
    with pytest.raises(ValueError):
        codec.decode({0: fragments[0], 3: fragments[1]}, 3)
    with pytest.raises(ValueError):
        codec.reconstruct({0: fragments[0], 1: fragments[1]}, [3])


def test_backend_is_isa_l_or_says_it_fell_back(monkeypatch):
    assert Codec(2, 1).backend in erasure.BACKENDS
    from pyeclib import ec_iface

    real = ec_iface.ECDriver

    def without_isa_l(**kwargs):
        if kwargs["ec_type"].startswith("isa_l"):
            raise ec_iface.ECBackendNotSupported("ISA-L not available")
        return real(**kwargs)

    monkeypatch.setattr(erasure, "_drivers", {})
    monkeypatch.setattr(ec_iface, "ECDriver", without_isa_l)
    codec = Codec(2, 1)
    assert codec.backend == "liberasurecode_rs_vand"
    data = chunk(MiB + 1, seed=6)
    fragments = codec.encode(data)
    assert codec.decode({1: fragments[1], 2: fragments[2]}, len(data)) == data


def _encode_in_child(queue) -> None:
    import os

    codec = Codec(2, 1)
    fragments = codec.encode(b"made in the child" * 100)
    queue.put((os.getpid(), sorted({pid for pid, _, _ in erasure._drivers}), fragments))


def test_a_forked_process_makes_its_own_driver():
    import os

    parent = Codec(2, 1)
    expected = parent.encode(b"made in the child" * 100)  # the parent's driver now exists
    assert (os.getpid(), 2, 1) in erasure._drivers
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_encode_in_child, args=(queue,))
    child.start()
    pid, cached_pids, fragments = queue.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    assert pid != os.getpid()
    assert cached_pids == [pid]  # the inherited driver was dropped, not used
    assert fragments == expected
