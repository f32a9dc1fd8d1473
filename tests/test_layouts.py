"""The chunk layouts' one interface: the same tests run against a whole copy (1+0) and against
erasure-coded layouts, on real node directories (no services needed)."""
from __future__ import annotations

import hashlib
import random

import pytest

from pipeline.errors import ChunkUnavailable, NotEnoughFragments
from pipeline.storage.chunkstore import ChunkStore, Spool, fsync_dir
from pipeline.storage.layouts import (ErasureCodedLayout, Layout, LayoutRouter, WholeCopyLayout, fragment_name, fragments,
                              xxh3)

POLICIES = [(1, 0), (2, 1), (4, 2)]
NODES = 6


@pytest.fixture(params=POLICIES, ids=[f"{k}+{m}" for k, m in POLICIES])
def lay(request, tmp_path) -> Layout:
    chunks = ChunkStore([tmp_path / f"node-{i}" for i in range(1, NODES + 1)])
    chunks.ensure_dirs()
    spool = Spool(tmp_path / "spool")
    spool.ensure_dir()
    return LayoutRouter(chunks, spool).for_policy(*request.param)


def chunk(size: int = 100_000, seed: int = 1) -> tuple[str, bytes]:
    data = random.Random(seed).randbytes(size)
    return hashlib.sha256(data).hexdigest(), data


def written(lay: Layout, size: int = 100_000, seed: int = 1) -> tuple[dict, bytes]:
    """A chunk written durably into the layout, and its document as ingest records it."""
    h, data = chunk(size, seed)
    doc = lay.new_document(h, len(data), xxh3(data), lay.chunks.node_ids)
    placed = lay.write(doc, data)
    for d in placed.dirs:
        fsync_dir(d)
    assert not placed.failed
    return {**doc, "frags": sorted(placed.frags, key=lambda f: f["i"])}, data


def path_of(lay: Layout, doc: dict, index: int):
    frag = next(f for f in fragments(doc) if f["i"] == index)
    return lay.chunks.path(frag["node"], lay.fragment_name(doc["_id"], index))


def no_damage(found):
    raise AssertionError(f"a sound chunk reported damage: {found}")


def test_a_written_chunk_is_placed_and_reads_back_byte_exact(lay):
    doc, data = written(lay)
    assert len(fragments(doc)) == lay.width and lay.is_placed(doc)
    assert sorted(p.name for p in (path_of(lay, doc, i) for i in range(lay.width)) if p.exists()) == \
        sorted(fragment_name(doc["_id"], i, lay.k, lay.m) for i in range(lay.width))
    assert lay.read(doc, no_damage) == data
    found = lay.verify(doc)
    assert sorted(found.good) == list(range(lay.width)) and not found.missing and not found.corrupt


def test_an_empty_chunk_reads_back_empty(lay):
    doc, data = written(lay, size=0)
    assert data == b"" and lay.read(doc, no_damage) == b""


def test_a_flipped_byte_is_found_by_verify_and_quarantined_not_deleted(lay):
    doc, _ = written(lay)
    path = path_of(lay, doc, 0)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(raw)
    found = lay.verify(doc)
    assert [(f["i"], why) for f, why in found.corrupt] == [(0, "content does not match its checksum")]
    assert 0 not in found.good
    frag = found.corrupt[0][0]
    assert lay.quarantine(doc, frag) and not path.exists()
    assert [q for q in lay.chunks.quarantined(frag["node"]) if q.startswith(path.name + ".q")]


def test_a_fragment_of_the_wrong_size_is_corrupt(lay):
    doc, _ = written(lay)
    path = path_of(lay, doc, 0)
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-1])
    assert [(f["i"], why) for f, why in lay.verify(doc).corrupt] == [(0, f"{size - 1} bytes, expected {size}")]
    assert not lay.is_placed(doc)  # the stat alone sees the wrong size


def test_a_lost_fragment_is_missing_absent_and_unplaced(lay):
    doc, _ = written(lay)
    path_of(lay, doc, 0).unlink()
    found = lay.verify(doc)
    assert [f["i"] for f in found.missing] == [0] and not found.corrupt
    assert not lay.is_placed(doc) and sorted(f["i"] for f in lay.present(doc)) == list(range(1, lay.width))


def test_a_read_with_a_lost_fragment_is_served_from_parity_or_fails(lay):
    doc, data = written(lay)
    path_of(lay, doc, 0).unlink()
    reported = []
    if lay.redundant:
        assert lay.read(doc, reported.append) == data
        assert [[f["i"] for f in found.missing] for found in reported] == [[0]]
    else:
        with pytest.raises(ChunkUnavailable) as err:
            lay.read(doc, reported.append)
        assert err.value.reason == "chunk file missing" and err.value.chunk_hash == doc["_id"]


def test_rebuild_restores_a_lost_fragment_byte_exact_or_says_it_cannot(lay):
    doc, _ = written(lay)
    original = path_of(lay, doc, 0).read_bytes()
    path_of(lay, doc, 0).unlink()
    good = lay.verify(doc).good
    if not lay.redundant:
        with pytest.raises(NotEnoughFragments):
            lay.rebuild(good, [0])
        return
    rebuilt = lay.rebuild(good, [0])
    placed = lay.write_fragments(doc, rebuilt, {0: fragments(doc)[0]["node"]})
    assert [f["xxh3"] for f in placed.frags] == [fragments(doc)[0]["xxh3"]]
    assert path_of(lay, doc, 0).read_bytes() == original and lay.is_placed(doc)


def test_read_fragment_returns_the_bytes_and_no_fault_of_a_sound_fragment(lay):
    doc, data = written(lay)
    frag = fragments(doc)[-1]
    raw, why = lay.read_fragment(doc, frag)
    assert why is None and raw == path_of(lay, doc, frag["i"]).read_bytes()
    assert lay.read_fragment(doc, {**frag, "node": None}) == (None, None)


def test_place_from_spool_puts_a_spooled_chunk_into_the_layout(lay):
    h, data = chunk(50_000, 7)
    lay.spool.create("f1")
    src = lay.spool.chunk_path("f1", 0)
    src.write_bytes(data)
    doc = lay.new_document(h, len(data), xxh3(data), lay.chunks.node_ids)
    placed = lay.place_from_spool(doc, src)
    for d in placed.dirs:
        fsync_dir(d)
    doc = {**doc, "frags": sorted(placed.frags, key=lambda f: f["i"])}
    assert lay.is_placed(doc) and lay.read(doc, no_damage) == data
    assert src.exists() == lay.redundant  # a whole copy is moved; fragments are written from a copy that stays


def test_delete_removes_every_fragment_file(lay):
    doc, _ = written(lay)
    lay.delete(doc)
    assert not any(path_of(lay, doc, i).exists() for i in range(lay.width))
    assert [f["i"] for f in lay.verify(doc).missing] == list(range(lay.width))


def test_the_router_picks_the_class_from_the_policy_and_from_a_document(tmp_path):
    router = LayoutRouter(ChunkStore([tmp_path / "node-1"]), Spool(tmp_path / "spool"))
    assert type(router.for_policy(1, 0)) is WholeCopyLayout
    assert type(router.for_policy(2, 1)) is ErasureCodedLayout and router.for_policy(2, 1) is router.for_policy(2, 1)
    assert type(router.for_chunk({"_id": "h", "k": 4, "m": 2, "frags": []})) is ErasureCodedLayout
    legacy = {"_id": "h", "node": "node-1", "size": 3, "xxh3": "x"}  # written before layouts: a bare node
    assert type(router.for_chunk(legacy)) is WholeCopyLayout
    assert fragment_name("h", 0, 1, 0) == "h" and fragment_name("h", 2, 2, 1) == "h.2"
