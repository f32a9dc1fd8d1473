"""Query shapes of the metadata module against the nx-27017 stand-in (regressions for its gaps)."""
from __future__ import annotations

import threading
import time

import pytest
from bson import ObjectId

from pipeline.metadata.chunks import TOUCH_REFRESH_S

from pipeline.metadata.model import CHUNK_DELETING, CHUNK_STORED, CHUNK_WRITING


def test_a_chunk_is_claimed_once_even_under_concurrent_claims(store):
    meta = store.meta
    winners = []
    barrier = threading.Barrier(6)

    def claim(i):
        barrier.wait()
        if meta.chunks.claim_chunk({"_id": "c" * 64, "size": 1, "xxh3": "x", "node": f"node-{i}"}):
            winners.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    doc = meta.db.chunks.find_one({"_id": "c" * 64})
    assert doc["state"] == CHUNK_WRITING and doc["node"] == f"node-{winners[0]}"


def test_bulk_claim_reports_exactly_the_new_hashes(store):
    meta = store.meta
    assert meta.chunks.claim_chunks([{"_id": "a" * 64, "size": 1, "xxh3": "x", "node": "node-1"}]) == {"a" * 64}
    claimed = meta.chunks.claim_chunks([{"_id": h * 64, "size": 1, "xxh3": "x", "node": "node-2"} for h in "abc"])
    assert claimed == {"b" * 64, "c" * 64}
    assert meta.db.chunks.find_one({"_id": "a" * 64})["node"] == "node-1"


def test_touch_only_matches_stored_chunks(store):
    meta = store.meta
    meta.chunks.claim_chunks([{"_id": h * 64, "size": 1, "xxh3": "x", "node": "node-1"} for h in "de"])
    assert meta.chunks.touch_chunks(["d" * 64, "e" * 64]) == 0
    meta.chunks.mark_chunks_stored(["d" * 64])
    assert meta.db.chunks.find_one({"_id": "d" * 64})["state"] == CHUNK_STORED
    assert meta.chunks.touch_chunks(["d" * 64, "e" * 64]) == 1


def test_touch_refreshes_only_stale_stamps_and_counts_the_stored(store):
    meta = store.meta
    hashes = [h * 64 for h in "fgh"]
    meta.chunks.claim_chunks([{"_id": h, "size": 1, "xxh3": "x", "node": "node-1"} for h in hashes])
    assert meta.chunks.mark_chunks_stored(hashes[:2]) == 2
    assert meta.chunks.mark_chunks_stored(hashes) == 1  # only the one still writing
    stale, fresh = time.time() - 10 * TOUCH_REFRESH_S, time.time() - TOUCH_REFRESH_S / 2
    meta.db.chunks.update_one({"_id": hashes[0]}, {"$set": {"lastRef": stale}})
    meta.db.chunks.update_one({"_id": hashes[1]}, {"$set": {"lastRef": fresh}})
    meta.db.chunks.update_one({"_id": hashes[2]}, {"$set": {"state": CHUNK_DELETING, "lastRef": stale}})
    before = time.time()
    assert meta.chunks.touch_chunks(hashes) == 2
    docs = meta.chunks.chunk_docs(hashes)
    assert docs[hashes[0]]["lastRef"] >= before - 1e-3
    assert docs[hashes[1]]["lastRef"] == pytest.approx(fresh, abs=1e-3)  # about 15 digits kept
    assert docs[hashes[2]]["lastRef"] == pytest.approx(stale, abs=1e-3)
    assert docs[hashes[2]]["state"] == CHUNK_DELETING


def test_start_processing_takes_only_queued_or_processing_files(store):
    meta = store.meta
    f = meta.files.insert_file(ObjectId(), "t", "n", "text/plain", 1, "0" * 64, 1, 1024)
    assert meta.files.start_processing(f.id).status == "processing"
    assert meta.files.start_processing(f.id).status == "processing"  # a re-queued ingest takes it again
    assert meta.files.mark_stored(f.id, 1)
    assert meta.files.start_processing(f.id) is None
    assert meta.files.get_file(f.id).status == "stored"
    assert meta.files.start_processing(str(ObjectId())) is None


def test_manifest_page_by_id_is_the_page_the_query_finds(store):
    meta = store.meta
    file_id = str(ObjectId())
    for page in range(3):
        meta.files.put_manifest_page(file_id, page, page * 2, page * 20, [f"{page}a", f"{page}b"], ["x", "y"], [10, 10])
    assert [meta.files.manifest_page(file_id, p) for p in range(3)] == list(meta.files.iter_manifest(file_id))
    assert meta.files.manifest_page(file_id, 3) is None


def test_releasing_manifests_stamps_every_chunk_in_bounded_batches_then_drops_the_pages(store):
    meta = store.meta
    hashes = [f"{i:064x}" for i in range(10)]
    meta.chunks.claim_chunks([{"_id": h, "size": 1, "xxh3": "x", "node": "node-1"} for h in hashes])
    meta.chunks.mark_chunks_stored(hashes[:7])  # three stay writing: stamped too
    meta.db.chunks.update_many({}, {"$set": {"lastRef": 1.0}})
    files = [str(ObjectId()) for _ in range(2)]
    for page in range(3):  # pages of 2 entries: 5 over the two files, a chunk shared between them
        meta.files.put_manifest_page(files[page % 2], page // 2, page * 2, page * 20, hashes[page * 2:page * 2 + 2],
                               ["x", "y"], [10, 10])
    meta.files.put_manifest_page(files[1], 1, 2, 20, [hashes[0], *hashes[6:10]], ["x"] * 5, [10] * 5)
    before = time.time()
    assert meta.files.release_manifests(files, stamp_batch=3) == 4
    assert all(d["lastRef"] >= before - 1e-3 for d in meta.db.chunks.find({"_id": {"$in": hashes}}))
    assert meta.db.manifests.count_documents({"file": {"$in": files}}) == 0


def test_manifest_pages_read_the_first_by_id_and_the_rest_only_when_there_are_more(store):
    meta = store.meta
    file_id = str(ObjectId())
    for page in range(3):
        meta.files.put_manifest_page(file_id, page, page * 2, page * 20, [f"{page}a", f"{page}b"], ["x", "y"], [10, 10])
    every = list(meta.files.iter_manifest(file_id))
    assert list(meta.files.manifest_pages(file_id, 6)) == every
    assert list(meta.files.manifest_pages(file_id, 6, first=every[0])) == every
    assert list(meta.files.manifest_pages(file_id, 2)) == every[:1]  # a one-page file: no second query
    assert list(meta.files.manifest_pages(str(ObjectId()), 0)) == []


def test_timestamps_written_by_set_stay_numbers(store):
    meta = store.meta
    f = meta.files.insert_file(ObjectId(), "t", "n", "text/plain", 1, "0" * 64, 1, 1024)
    before = time.time()
    assert meta.files.start_processing(f.id).status == "processing"
    doc = meta.files.get_file(f.id)
    # the stand-in keeps about 15 significant digits of a double: microseconds, not less
    assert isinstance(doc.updated, float) and doc.updated >= before - 1e-3
    assert meta.files.files_in_states(["processing"], time.time() + 1)[0].id == f.id


def test_files_are_referenced_by_hex_strings(store):
    meta = store.meta
    f = meta.files.insert_file(ObjectId(), "t", "n", "text/plain", 1, "0" * 64, 1, 1024)
    meta.files.put_manifest_page(f.id, 0, 0, 0, ["f" * 64], ["x"], [1])
    pages = list(meta.files.iter_manifest(f.id))
    assert [p.hashes for p in pages] == [["f" * 64]]
    assert meta.files.referenced_hashes(["f" * 64, "0" * 64]) == {"f" * 64}
    assert meta.files.delete_manifest(f.id) == 1 and meta.files.referenced_hashes(["f" * 64]) == set()


def test_indexes_are_created_idempotently(store):
    store.prepare()
    store.prepare()
    indexes = store.meta.db.api_keys.index_information().values()
    assert [i.get("unique") for i in indexes if i["key"] == [("hash", 1)]] == [True]


def test_embedded_stand_in_keeps_databases_apart(backends):
    from pipeline.metadata.repositories import Metadata

    a = Metadata.connect(backends.mongo_url, "iso_a")
    b = Metadata.connect(backends.mongo_url, "iso_b")
    a.db.chunks.insert_one({"_id": "kept"})
    b.db.chunks.insert_one({"_id": "dropped"})
    b.client.drop_database("iso_b")
    assert [d["_id"] for d in a.db.chunks.find()] == ["kept"]
    a.client.drop_database("iso_a")


def test_id_ranges_are_index_bounds_with_the_filters_meaning(store):
    """``id_range`` reads a range of ``_id`` through ``min``/``max`` (the stand-in seeks its index
    then, where ``$gt``/``$lt`` on ``_id`` scan the collection): inclusive and exclusive lower bounds,
    an exclusive upper bound, byte order past ASCII, a filter beside the range, empty ranges."""
    from pipeline.metadata.mongo import id_range

    coll = store.meta.db["range_probe"]
    ids = ["a/", "a/x", "a/x\x00", "a/x\x001", "a/x/", "a/xy", "a/\u00e9", "a/\U0001f600", "a0", "b/x"]
    coll.insert_many([{"_id": i, "even": n % 2 == 0} for n, i in enumerate(ids)])
    in_a = sorted(ids[:8], key=lambda s: s.encode())
    assert [d["_id"] for d in id_range(coll, "a/", "a0", 100)] == in_a
    assert [d["_id"] for d in id_range(coll, "a/x", "a0", 100, low_inclusive=False)] == in_a[2:]
    assert [d["_id"] for d in id_range(coll, "a/x", "a0", 2, low_inclusive=False)] == in_a[2:4]
    assert [d["_id"] for d in id_range(coll, "a/x", "a/x/", 100)] == ["a/x", "a/x\x00", "a/x\x001"]
    assert [d["_id"] for d in id_range(coll, "a/", "a0", 100, query={"even": True})] == \
        [i for i in in_a if ids.index(i) % 2 == 0]
    assert id_range(coll, "a/", "a0", 1, projection={"_id": 1}) == [{"_id": "a/"}]
    assert id_range(coll, "a0", "a0", 10) == [] and id_range(coll, "a0", "a/", 10) == []
    assert id_range(coll, "a/xy", "a/xy\x00", 10, low_inclusive=False) == []
    assert [d["_id"] for d in id_range(coll, "a/xy", "a/xy\x00", 10)] == ["a/xy"]
    coll.drop()
