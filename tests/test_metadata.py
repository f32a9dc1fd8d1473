"""Query shapes of the metadata module against the nx-27017 stand-in (regressions for its gaps)."""
from __future__ import annotations

import threading
import time

import pytest
from bson import ObjectId

from pipeline.metadata import CHUNK_DELETING, CHUNK_STORED, CHUNK_WRITING, TOUCH_REFRESH_S


def test_a_chunk_is_claimed_once_even_under_concurrent_claims(store):
    repo = store.repo
    winners = []
    barrier = threading.Barrier(6)

    def claim(i):
        barrier.wait()
        if repo.claim_chunk({"_id": "c" * 64, "size": 1, "xxh3": "x", "node": f"node-{i}"}):
            winners.append(i)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    doc = repo.chunks.find_one({"_id": "c" * 64})
    assert doc["state"] == CHUNK_WRITING and doc["node"] == f"node-{winners[0]}"


def test_bulk_claim_reports_exactly_the_new_hashes(store):
    repo = store.repo
    assert repo.claim_chunks([{"_id": "a" * 64, "size": 1, "xxh3": "x", "node": "node-1"}]) == {"a" * 64}
    claimed = repo.claim_chunks([{"_id": h * 64, "size": 1, "xxh3": "x", "node": "node-2"} for h in "abc"])
    assert claimed == {"b" * 64, "c" * 64}
    assert repo.chunks.find_one({"_id": "a" * 64})["node"] == "node-1"


def test_touch_only_matches_stored_chunks(store):
    repo = store.repo
    repo.claim_chunks([{"_id": h * 64, "size": 1, "xxh3": "x", "node": "node-1"} for h in "de"])
    assert repo.touch_chunks(["d" * 64, "e" * 64]) == 0
    repo.mark_chunks_stored(["d" * 64])
    assert repo.chunks.find_one({"_id": "d" * 64})["state"] == CHUNK_STORED
    assert repo.touch_chunks(["d" * 64, "e" * 64]) == 1


def test_touch_refreshes_only_stale_stamps_and_counts_the_stored(store):
    repo = store.repo
    hashes = [h * 64 for h in "fgh"]
    repo.claim_chunks([{"_id": h, "size": 1, "xxh3": "x", "node": "node-1"} for h in hashes])
    assert repo.mark_chunks_stored(hashes[:2]) == 2
    assert repo.mark_chunks_stored(hashes) == 1  # only the one still writing
    stale, fresh = time.time() - 10 * TOUCH_REFRESH_S, time.time() - TOUCH_REFRESH_S / 2
    repo.chunks.update_one({"_id": hashes[0]}, {"$set": {"lastRef": stale}})
    repo.chunks.update_one({"_id": hashes[1]}, {"$set": {"lastRef": fresh}})
    repo.chunks.update_one({"_id": hashes[2]}, {"$set": {"state": CHUNK_DELETING, "lastRef": stale}})
    before = time.time()
    assert repo.touch_chunks(hashes) == 2
    docs = repo.chunk_docs(hashes)
    assert docs[hashes[0]]["lastRef"] >= before - 1e-3
    assert docs[hashes[1]]["lastRef"] == pytest.approx(fresh, abs=1e-3)  # about 15 digits kept
    assert docs[hashes[2]]["lastRef"] == pytest.approx(stale, abs=1e-3)
    assert docs[hashes[2]]["state"] == CHUNK_DELETING


def test_start_processing_takes_only_queued_or_processing_files(store):
    repo = store.repo
    f = repo.insert_file(ObjectId(), "t", "n", "text/plain", 1, "0" * 64, 1, 1024)
    assert repo.start_processing(f.id).status == "processing"
    assert repo.start_processing(f.id).status == "processing"  # a re-queued ingest takes it again
    assert repo.mark_stored(f.id, 1)
    assert repo.start_processing(f.id) is None
    assert repo.get_file(f.id).status == "stored"
    assert repo.start_processing(str(ObjectId())) is None


def test_manifest_page_by_id_is_the_page_the_query_finds(store):
    repo = store.repo
    file_id = str(ObjectId())
    for page in range(3):
        repo.put_manifest_page(file_id, page, page * 2, page * 20, [f"{page}a", f"{page}b"], ["x", "y"], [10, 10])
    assert [repo.manifest_page(file_id, p) for p in range(3)] == list(repo.iter_manifest(file_id))
    assert repo.manifest_page(file_id, 3) is None


def test_releasing_manifests_stamps_every_chunk_in_bounded_batches_then_drops_the_pages(store):
    repo = store.repo
    hashes = [f"{i:064x}" for i in range(10)]
    repo.claim_chunks([{"_id": h, "size": 1, "xxh3": "x", "node": "node-1"} for h in hashes])
    repo.mark_chunks_stored(hashes[:7])  # three stay writing: stamped too
    repo.chunks.update_many({}, {"$set": {"lastRef": 1.0}})
    files = [str(ObjectId()) for _ in range(2)]
    for page in range(3):  # pages of 2 entries: 5 over the two files, a chunk shared between them
        repo.put_manifest_page(files[page % 2], page // 2, page * 2, page * 20, hashes[page * 2:page * 2 + 2],
                               ["x", "y"], [10, 10])
    repo.put_manifest_page(files[1], 1, 2, 20, [hashes[0], *hashes[6:10]], ["x"] * 5, [10] * 5)
    before = time.time()
    assert repo.release_manifests(files, stamp_batch=3) == 4
    assert all(d["lastRef"] >= before - 1e-3 for d in repo.chunks.find({"_id": {"$in": hashes}}))
    assert repo.manifests.count_documents({"file": {"$in": files}}) == 0


def test_manifest_pages_read_the_first_by_id_and_the_rest_only_when_there_are_more(store):
    repo = store.repo
    file_id = str(ObjectId())
    for page in range(3):
        repo.put_manifest_page(file_id, page, page * 2, page * 20, [f"{page}a", f"{page}b"], ["x", "y"], [10, 10])
    every = list(repo.iter_manifest(file_id))
    assert list(repo.manifest_pages(file_id, 6)) == every
    assert list(repo.manifest_pages(file_id, 6, first=every[0])) == every
    assert list(repo.manifest_pages(file_id, 2)) == every[:1]  # a one-page file: no second query
    assert list(repo.manifest_pages(str(ObjectId()), 0)) == []


def test_timestamps_written_by_set_stay_numbers(store):
    repo = store.repo
    f = repo.insert_file(ObjectId(), "t", "n", "text/plain", 1, "0" * 64, 1, 1024)
    before = time.time()
    assert repo.start_processing(f.id).status == "processing"
    doc = repo.get_file(f.id)
    # the stand-in keeps about 15 significant digits of a double: microseconds, not less
    assert isinstance(doc.updated, float) and doc.updated >= before - 1e-3
    assert repo.files_in_states(["processing"], time.time() + 1)[0].id == f.id


def test_files_are_referenced_by_hex_strings(store):
    repo = store.repo
    f = repo.insert_file(ObjectId(), "t", "n", "text/plain", 1, "0" * 64, 1, 1024)
    repo.put_manifest_page(f.id, 0, 0, 0, ["f" * 64], ["x"], [1])
    pages = list(repo.iter_manifest(f.id))
    assert [p.hashes for p in pages] == [["f" * 64]]
    assert repo.referenced_hashes(["f" * 64, "0" * 64]) == {"f" * 64}
    assert repo.delete_manifest(f.id) == 1 and repo.referenced_hashes(["f" * 64]) == set()


def test_indexes_are_created_idempotently(store):
    store.prepare()
    store.prepare()
    indexes = store.repo.keys.index_information().values()
    assert [i.get("unique") for i in indexes if i["key"] == [("hash", 1)]] == [True]


def test_embedded_stand_in_keeps_databases_apart(backends):
    from pipeline.metadata import MetadataRepository

    a = MetadataRepository.connect(backends.mongo_url, "iso_a")
    b = MetadataRepository.connect(backends.mongo_url, "iso_b")
    a.chunks.insert_one({"_id": "kept"})
    b.chunks.insert_one({"_id": "dropped"})
    b.client.drop_database("iso_b")
    assert [d["_id"] for d in a.chunks.find()] == ["kept"]
    a.client.drop_database("iso_a")
