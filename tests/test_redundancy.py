"""Erasure-coded chunks in-process (real Redis, nx-27017, files on disk): degraded writes and
reads, heal, scrub, drain, rebalance and conversion of whole-copy chunks."""
from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
import xxhash

from pipeline.errors import NodesUnavailable
from pipeline.maintenance.heal import BLOCKED, HEALED, HEALTHY
from pipeline.metadata.model import PROCESSING
from pipeline.storage.chunkio import fragment_name, fragments, layout, nodes_of
from pipeline.store import ObjectStore
from tests.conftest import _store
from tests.probes import fill_node
from tests.stack import random_bytes
from tests.test_pipeline import CHUNK, pieces, put, read_all


def nodes(settings, count: int) -> tuple[Path, ...]:
    root = Path(settings.nodes[0]).parent
    return tuple(root / f"node-{i}" for i in range(1, count + 1))


@pytest.fixture
def store6(settings):
    """4+2 over six nodes."""
    yield from _store(settings.with_overrides(nodes=nodes(settings, 6), ec="4+2"))


@pytest.fixture
def store4(settings):
    """2+1 over four nodes."""
    yield from _store(settings.with_overrides(nodes=nodes(settings, 4)))


def hashes(store, f) -> list[str]:
    return [h for page in store.meta.files.iter_manifest(f.id) for h in page.hashes]


def frag_path(store, doc: dict, index: int) -> Path:
    k, m = layout(doc)
    frag = next(x for x in fragments(doc) if x["i"] == index)
    return store.chunks.path(frag["node"], fragment_name(doc["_id"], index, k, m))


def files_per_node(store) -> Counter:
    return Counter({n: sum(1 for p in Path(d).glob("??/??/*") if p.is_file())
                    for n, d in store.chunks.node_dirs.items()})


def test_heal_rebuilds_a_lost_fragment_byte_exact_and_a_second_heal_changes_nothing(store):
    data = random_bytes(4 * CHUNK, 301)
    f = put(store, data)
    h = hashes(store, f)[2]
    doc = store.meta.chunks.get_chunk(h)
    path = frag_path(store, doc, 1)
    original = path.read_bytes()
    path.unlink()
    assert read_all(store, f) == data  # degraded read
    assert store.meta.chunks.get_chunk(h).get("needsHeal")
    assert store.healer().heal_chunk(h).status == HEALED
    assert path.read_bytes() == original  # back on its own node, same bytes
    after = store.meta.chunks.get_chunk(h)
    assert "needsHeal" not in after and after["frags"] == doc["frags"] and after["fv"] == doc["fv"] + 1
    assert store.healer().heal_chunk(h).status == HEALTHY and store.meta.chunks.get_chunk(h) == after
    assert store.fsck().run().clean


def test_four_plus_two_survives_any_two_lost_nodes(store6):
    store = store6
    files = {seed: random_bytes(9 * CHUNK + 123, seed) for seed in (310, 311, 312)}
    ids = {seed: put(store, data) for seed, data in files.items()}
    for doc in store.meta.chunks.stored_chunks():
        assert len(set(nodes_of(doc))) == 6 and layout(doc) == (4, 2)
    for lost in (("node-1", "node-2"), ("node-3", "node-6")):
        aside = {n: store.chunks.node_dirs[n].rename(store.chunks.node_dirs[n].with_name(n + ".away")) for n in lost}
        for seed, f in ids.items():
            assert read_all(store, f) == files[seed]
        for n, moved in aside.items():
            moved.rename(store.chunks.node_dirs[n])


def test_ingest_skips_a_down_node_and_keeps_every_chunk_fully_redundant(store4, settings):
    store = store4
    shutil.rmtree(store.chunks.node_dirs["node-2"])
    data = random_bytes(12 * CHUNK, 320)
    f = put(store, data)
    for h in hashes(store, f):
        doc = store.meta.chunks.get_chunk(h)
        assert "node-2" not in nodes_of(doc) and len(set(nodes_of(doc))) == 3 and store.chunkio.is_placed(doc)
    assert not store.chunks.node_dirs["node-2"].exists()
    assert read_all(store, f) == data


def test_too_few_nodes_up_keeps_the_file_queued_then_stores_it_once_a_node_is_back(store):
    away = {n: store.chunks.node_dirs[n].rename(store.chunks.node_dirs[n].with_name(n + ".away"))
            for n in ("node-2", "node-3")}
    data = random_bytes(3 * CHUNK, 330)
    f = store.receive("t1", "f", None, pieces(data))
    with pytest.raises(NodesUnavailable) as err:
        store.ingest(f.id)
    assert "needs 2 writable node(s); 1 of 3" in err.value.message
    assert store.meta.files.get_file(f.id).status == PROCESSING and store.spool.exists(f.id)
    health = store.health()
    assert not health["ok"] and "ingest waits" in health["layout"]["reason"]
    assert [n["state"] for n in health["nodes"]] == ["up", "down", "down"]
    assert read_all(store, store.get_readable("t1", f.id)) == data  # read-after-write from the spool
    away["node-3"].rename(store.chunks.node_dirs["node-3"])
    assert store.ingest(f.id).status == "stored"  # two of three nodes: stored degraded
    assert read_all(store, store.get_readable("t1", f.id)) == data
    away["node-2"].rename(store.chunks.node_dirs["node-2"])
    assert store.healer().heal_all().lost == 0 and store.fsck().run().clean


def test_a_full_node_is_skipped_the_chunk_stored_with_the_rest_and_flagged_for_heal(store6, monkeypatch):
    store = store6
    queued: list[str] = []
    store.heal_enqueue = lambda *hashes: queued.extend(hashes)
    fill_node(monkeypatch, store.chunks.node_dirs["node-4"])
    data = random_bytes(6 * CHUNK, 340)
    f = put(store, data)
    monkeypatch.undo()
    docs = [store.meta.chunks.get_chunk(h) for h in hashes(store, f)]
    assert all(len(fragments(d)) == 5 and "node-4" not in nodes_of(d) and d.get("needsHeal") for d in docs)
    assert sorted(queued) == sorted(d["_id"] for d in docs)
    assert read_all(store, f) == data
    assert store.fsck().run().under_replicated.count == 6
    assert [store.healer().heal_chunk(d["_id"]).status for d in docs] == [HEALED] * 6  # node-4 has room again
    assert store.fsck().run().clean and read_all(store, f) == data


def test_a_full_node_among_three_stores_a_two_plus_one_upload_degraded_then_heal_completes_it(store, monkeypatch):
    data = random_bytes(4 * CHUNK, 342)
    f = store.receive("t1", "f", None, pieces(data))
    fill_node(monkeypatch, store.chunks.node_dirs["node-2"])
    assert store.ingest(f.id).status == "stored"  # two fragments of three: k, stored and held
    docs = [store.meta.chunks.get_chunk(h) for h in hashes(store, f)]
    assert all(len(fragments(d)) == 2 and "node-2" not in nodes_of(d) and d.get("needsHeal") for d in docs)
    assert all(store.spool.is_held(d["_id"]) for d in docs) and not store.spool.exists(f.id)
    monkeypatch.undo()
    assert store.healer().heal_all().healed == len(docs)  # node-2 has room again
    assert not any(store.spool.is_held(d["_id"]) for d in docs)
    assert read_all(store, store.get_readable("t1", f.id)) == data and store.fsck().run().clean


def test_heal_with_no_node_free_of_the_chunk_is_blocked_and_stays_flagged(store):
    data = random_bytes(2 * CHUNK, 345)
    f = put(store, data)
    h = hashes(store, f)[0]
    doc = store.meta.chunks.get_chunk(h)
    moved = store.chunks.node_dirs["node-1"].rename(store.chunks.node_dirs["node-1"].with_name("gone"))
    assert "node-1" in nodes_of(doc)  # 2+1 over three nodes: every node holds a fragment
    result = store.healer().heal_chunk(h)
    assert result.status == BLOCKED and store.meta.chunks.get_chunk(h).get("needsHeal")
    assert read_all(store, f) == data
    moved.rename(store.chunks.node_dirs["node-1"])
    assert store.healer().heal_chunk(h).status == HEALTHY and "needsHeal" not in store.meta.chunks.get_chunk(h)


def test_corrupt_data_and_parity_fragments_are_quarantined_and_rewritten(store):
    data = random_bytes(5 * CHUNK, 350)
    f = put(store, data)
    victims = [(store.meta.chunks.get_chunk(hashes(store, f)[1]), 0), (store.meta.chunks.get_chunk(hashes(store, f)[3]), 2)]
    originals = {}
    for doc, i in victims:
        originals[doc["_id"]] = raw = frag_path(store, doc, i).read_bytes()
        flipped = bytearray(raw)
        flipped[40] ^= 0x10
        frag_path(store, doc, i).write_bytes(bytes(flipped))
    assert read_all(store, f) == data
    report = store.fsck().run(repair=True)
    assert report.corrupt.count == 1 and report.repaired["healed"] == 2  # parity: no read touched it
    for doc, i in victims:
        assert frag_path(store, doc, i).read_bytes() == originals[doc["_id"]]
        node = next(x["node"] for x in fragments(doc) if x["i"] == i)
        assert [q for q in store.chunks.quarantined(node) if q.startswith(f"{doc['_id']}.{i}.")]
    assert store.fsck().run().clean and read_all(store, f) == data


def test_scrub_finds_an_injected_corruption_in_one_pass_and_resumes_where_it_stopped(store):
    data = random_bytes(8 * CHUNK, 360)
    f = put(store, data)
    victim = store.meta.chunks.get_chunk(hashes(store, f)[5])
    path = frag_path(store, victim, 2)  # parity: no read would find it
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01
    path.write_bytes(bytes(raw))
    queued: list[str] = []
    first = store.scrubber().run_slice(budget_s=0, full=True, on_damage=queued.append, page_size=3)
    assert not first.finished and first.chunks == 3  # one page, then stopped (budget)
    state = store.meta.operations.last_event("scrub")
    assert state["inPass"] and state["cursor"]
    rest = store.scrubber().run_slice(budget_s=None, on_damage=queued.append, page_size=3)
    assert rest.finished and first.chunks + rest.chunks == 8
    assert queued == [victim["_id"]] and first.corrupt + rest.corrupt == 1
    last = store.meta.operations.last_event("scrub")["lastPass"]
    assert last["chunks"] == 8 and last["corrupt"] == 1 and last["fragments"] == 24
    assert store.scrubber().run_slice().idle  # the next pass is due only after MINIS3_SCRUB_PERIOD_S
    assert store.healer().heal_chunk(victim["_id"]).status == HEALED
    assert xxhash.xxh3_128_hexdigest(path.read_bytes()) == fragments(victim)[2]["xxh3"]
    assert store.fsck().run().clean


def test_drain_moves_every_fragment_off_a_node_and_new_chunks_avoid_it(store4):
    store = store4
    data = random_bytes(20 * CHUNK, 370)
    f = put(store, data)
    assert files_per_node(store)["node-4"] > 0
    report = store.node_operations().drain_node("node-4")
    assert report.failed == 0 and report.remaining == 0 and report.moved > 0
    assert files_per_node(store)["node-4"] == 0
    assert read_all(store, f) == data
    for doc in store.meta.chunks.stored_chunks():
        assert len(set(nodes_of(doc))) == 3 and "node-4" not in nodes_of(doc)
    assert {r["node"]: r["state"] for r in store.node_operations().node_table()}["node-4"] == "draining"
    g = put(store, random_bytes(6 * CHUNK, 371))
    assert files_per_node(store)["node-4"] == 0 and read_all(store, g) == random_bytes(6 * CHUNK, 371)
    assert store.node_operations().drain_node("node-4").moved == 0  # resumable: nothing left
    assert store.fsck().run().clean


def test_rebalance_evens_out_fragments_after_a_node_is_added(store, settings):
    data = random_bytes(30 * CHUNK, 380)
    f = put(store, data)
    grown = ObjectStore.from_settings(settings.with_overrides(nodes=nodes(settings, 4)))
    grown.prepare()
    assert files_per_node(grown)["node-4"] == 0
    report = grown.node_operations().rebalance()
    counts = files_per_node(grown)
    assert report.failed == 0 and max(counts.values()) - min(counts.values()) <= 1 and sum(counts.values()) == 90
    assert read_all(grown, grown.get_readable("t1", f.id)) == data
    assert grown.fsck().run().clean


def test_mixed_store_reads_both_layouts_and_convert_turns_whole_copies_into_fragments(whole_store, settings):
    old = random_bytes(6 * CHUNK, 390)
    f_old = put(whole_store, old)
    coded = ObjectStore.from_settings(whole_store.settings.with_overrides(ec="2+1"))
    coded.placement.key = whole_store.placement.key
    new = random_bytes(4 * CHUNK, 391)
    f_new = put(coded, new)
    layouts = Counter(layout(d) for d in coded.meta.chunks.stored_chunks())
    assert layouts == Counter({(1, 0): 6, (2, 1): 4})
    assert read_all(coded, f_old) == old and read_all(coded, f_new) == new
    report = coded.node_operations().convert_all()
    assert report.converted == 6 and report.failed == 0
    assert Counter(layout(d) for d in coded.meta.chunks.stored_chunks()) == Counter({(2, 1): 10})
    assert not [p for n in coded.chunks.node_dirs.values() for p in n.glob("??/??/*") if "." not in p.name]
    assert read_all(coded, f_old) == old
    assert coded.meta.operations.last_event("ec_convert")["converted"] == 6
    assert coded.node_operations().convert_all().converted == 0  # resumable: nothing left
    assert coded.fsck().run().clean


def test_heal_all_finds_a_node_put_back_empty_and_restores_full_redundancy(store):
    files = {s: random_bytes(7 * CHUNK + 5, s) for s in (395, 396)}
    ids = {s: put(store, d) for s, d in files.items()}
    shutil.rmtree(store.chunks.node_dirs["node-2"])
    for s, f in ids.items():
        assert read_all(store, f) == files[s]
    store.chunks.node_dirs["node-2"].mkdir()
    report = store.healer().heal_all()
    assert report.healed == store.meta.chunks.count_chunks() and report.lost == 0
    assert store.fsck().run().clean and files_per_node(store)["node-2"] == report.healed
