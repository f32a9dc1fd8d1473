"""Data lifecycle: delete, garbage collection (grace, lock, races, dry run), clean-up of abandoned
work and fsck; the pipeline in-process against real Redis and nx-27017, then beat over HTTP."""
from __future__ import annotations

import hashlib
import os
import random
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import requests
from bson import ObjectId

from pipeline.errors import ChunkBusy, NotFound
from pipeline.maintenance.garbage import GC_LOCK
from pipeline.metadata.model import CHUNK_DELETING, CHUNK_STORED, CHUNK_WRITING
from pipeline.storage.chunkio import nodes_of
from tests.stack import BIN, ROOT, MiB, Stack, random_bytes, wait_for
from tests.test_pipeline import CHUNK, FRAGS, chunk_files, pieces, put, read_all


def hashes_of(data: bytes, size: int = CHUNK) -> set[str]:
    return {hashlib.sha256(data[i:i + size]).hexdigest() for i in range(0, len(data), size)}


def names_on_nodes(settings) -> set[str]:
    """Hashes of the chunks that have a file (a whole copy or a fragment) on some node."""
    return {p.name.partition(".")[0] for p in chunk_files(settings)}


def gc_after_grace(store, **kw) -> dict:
    """One GC run as if the grace period had passed since every delete so far."""
    return store.garbage_collector().collect(now=time.time() + store.settings.gc_grace_s + 1, **kw)


def ingest_until_final(store, file_id: str, attempts: int = 200) -> str:
    """What the task's retry policy does: run ingest again while a chunk is busy."""
    for _ in range(attempts):
        try:
            return store.ingest(file_id).status
        except ChunkBusy:
            time.sleep(0.005)
    raise AssertionError(f"ingest of {file_id} stayed busy")


def cli(settings, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings.to_env()}
    return subprocess.run([str(BIN / "minis3"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


# --- delete -------------------------------------------------------------------------------------

def test_deleted_file_disappears_at_once_but_its_chunks_stay_until_gc(store, settings):
    data = random_bytes(5 * CHUNK, 1)
    f = put(store, data)
    store.delete("t1", f.id)
    with pytest.raises(NotFound):
        store.get("t1", f.id)
    with pytest.raises(NotFound):
        store.get_readable("t1", f.id)
    with pytest.raises(NotFound):
        store.get_by_hash("t1", f.sha256)
    assert store.list("t1", 10, None) == ([], None)
    assert store.meta.db.manifests.count_documents({"file": f.id}) == 0
    assert names_on_nodes(settings) == hashes_of(data)
    with pytest.raises(NotFound):
        store.delete("t1", f.id)


def test_delete_of_another_tenants_file_is_not_found(store):
    f = put(store, random_bytes(CHUNK, 2), tenant="t1")
    with pytest.raises(NotFound):
        store.delete("t2", f.id)
    assert store.get_readable("t1", f.id).status == "stored"


# --- GC -----------------------------------------------------------------------------------------

def test_grace_period_counts_from_the_delete_not_from_the_last_upload(store, settings):
    data = random_bytes(4 * CHUNK, 3)
    f = put(store, data)
    long_ago = time.time() - 10 * settings.gc_grace_s
    store.meta.db.chunks.update_many({}, {"$set": {"lastRef": long_ago}})  # stored long ago
    store.delete("t1", f.id)
    assert store.garbage_collector().collect()["chunks"] == 0
    assert names_on_nodes(settings) == hashes_of(data)
    report = gc_after_grace(store)
    assert report["chunks"] == 4 and report["bytes"] == len(data)
    assert names_on_nodes(settings) == set()


def test_deleting_one_of_two_files_sharing_chunks_leaves_exactly_the_other_files_chunks(store, settings):
    a, b, c, d, e = (random_bytes(CHUNK, 10 + i) for i in range(5))
    first = put(store, a + b + c + d)
    second = put(store, c + d + e)
    store.delete("t1", first.id)
    report = gc_after_grace(store)
    assert report["chunks"] == 2 and report["bytes"] == 2 * CHUNK
    assert names_on_nodes(settings) == hashes_of(c + d + e)
    assert {doc["_id"] for doc in store.meta.db.chunks.find()} == hashes_of(c + d + e)
    assert read_all(store, store.get_readable("t1", second.id)) == c + d + e


def test_gc_after_deleting_everything_leaves_no_chunk_and_zero_physical_bytes(store, settings):
    ids = [put(store, random_bytes(n * CHUNK + 7, 20 + n)).id for n in (1, 3, 6)]
    assert store.stats().of_store(lambda: 0)["physicalBytes"] > 0
    for file_id in ids:
        store.delete("t1", file_id)
    report = gc_after_grace(store)
    assert report["chunks"] == 2 + 4 + 7
    assert chunk_files(settings) == []
    assert store.meta.db.chunks.count_documents({}) == 0
    stats = store.stats().of_store(lambda: 0)
    assert stats["physicalBytes"] == 0 and stats["chunks"] == 0
    assert stats["lastGc"]["chunksFreed"] == 13 and stats["lastGc"]["bytesFreed"] == report["bytes"]
    event = store.meta.operations.last_event("gc")
    assert event["chunks"] == 13 and event["seconds"] >= 0 and event["stillReferenced"] == 0


def test_gc_never_takes_a_chunk_a_live_file_references(store, settings):
    data = random_bytes(6 * CHUNK, 30)
    f = put(store, data)
    store.meta.db.chunks.update_many({}, {"$set": {"lastRef": 0.0}})  # as old as can be
    report = gc_after_grace(store)
    assert report["chunks"] == 0 and report["still_referenced"] == 6
    assert read_all(store, store.get_readable("t1", f.id)) == data


def test_a_short_manifest_kept_in_its_files_document_keeps_its_chunks_until_the_file_is_deleted(store, settings):
    """A small file's manifest lives in its file's document: GC finds its chunks named there, a
    delete takes the manifest out of the document, and then GC frees them."""
    data = random_bytes(2 * CHUNK + 5, 31)
    f = put(store, data)
    doc = store.meta.db.files.find_one({"_id": ObjectId(f.id)})
    assert doc["manifest"]["hashes"] == [hashlib.sha256(data[i:i + CHUNK]).hexdigest() for i in (0, CHUNK, 2 * CHUNK)]
    assert store.meta.db.manifests.count_documents({"file": f.id}) == 0
    store.meta.db.chunks.update_many({}, {"$set": {"lastRef": 0.0}})  # as old as can be
    report = gc_after_grace(store)
    assert report["chunks"] == 0 and report["still_referenced"] == 3
    assert read_all(store, store.get_readable("t1", f.id)) == data
    assert store.fsck().run().clean
    store.delete("t1", f.id)
    assert "manifest" not in store.meta.db.files.find_one({"_id": ObjectId(f.id)})
    assert gc_after_grace(store)["chunks"] == 3 and names_on_nodes(settings) == set()


def test_a_delete_interrupted_before_its_manifest_left_the_document_is_finished_by_the_spool_sweep(store,
                                                                                                 settings):
    data = random_bytes(CHUNK, 32)
    f = put(store, data)
    assert store.meta.files.mark_deleted(f.id, "t1")  # the process died here, before the release
    store.meta.db.chunks.update_many({}, {"$set": {"lastRef": 0.0}})
    assert gc_after_grace(store)["chunks"] == 0  # still named by the deleted file's document
    assert store.garbage_collector().release_stale_manifests() == [f.id]
    assert gc_after_grace(store)["chunks"] == 1 and names_on_nodes(settings) == set()


def test_gc_twice_is_the_same_as_once(store, settings):
    keep = put(store, random_bytes(3 * CHUNK, 40))
    gone = put(store, random_bytes(3 * CHUNK, 41))
    store.delete("t1", gone.id)
    now = time.time() + settings.gc_grace_s + 1
    first = store.garbage_collector().collect(now=now)
    files, docs = names_on_nodes(settings), list(store.meta.db.chunks.find({}, {"lastRef": 0}).sort("_id", 1))
    second = store.garbage_collector().collect(now=now)
    assert first["chunks"] == 3 and second["chunks"] == 0
    assert names_on_nodes(settings) == files
    assert list(store.meta.db.chunks.find({}, {"lastRef": 0}).sort("_id", 1)) == docs
    assert read_all(store, store.get_readable("t1", keep.id)) == random_bytes(3 * CHUNK, 40)


def test_gc_killed_midway_is_finished_or_undone_by_the_next_run(store, settings):
    gone = put(store, random_bytes(2 * CHUNK, 50))
    kept = put(store, random_bytes(CHUNK, 51))
    store.delete("t1", gone.id)
    cutoff = time.time() + settings.gc_grace_s
    # the killed run had taken all three: deleted one file, not yet the other, and one chunk is named again
    docs = {d["_id"]: d for d in store.meta.db.chunks.find()}
    for h, d in docs.items():
        assert store.meta.chunks.begin_chunk_delete(h, cutoff + 1e6, d["state"])
    first, second = sorted(hashes_of(random_bytes(2 * CHUNK, 50)))
    store.chunks.delete(nodes_of(docs[first])[0], first)
    # the next run starts once the killed run's lock has expired
    report = store.garbage_collector().collect(now=time.time() + settings.gc_lock_ttl_s + settings.gc_grace_s + 1)
    assert report["chunks"] == 2 and report["given_back"] >= 1
    assert store.meta.db.chunks.count_documents({"state": CHUNK_DELETING}) == 0
    assert names_on_nodes(settings) == hashes_of(random_bytes(CHUNK, 51))
    assert store.meta.chunks.chunk_docs(hashes_of(random_bytes(CHUNK, 51))).popitem()[1]["state"] == CHUNK_STORED
    assert read_all(store, store.get_readable("t1", kept.id)) == random_bytes(CHUNK, 51)


def test_gc_dry_run_reports_chunks_and_bytes_and_deletes_nothing(store, settings):
    data = random_bytes(3 * CHUNK + 5, 60)
    f = put(store, data)
    store.delete("t1", f.id)
    plan = gc_after_grace(store, dry_run=True)
    assert plan["dry_run"] is True and plan["chunks"] == 4 and plan["bytes"] == len(data)
    assert {c["chunk"] for c in plan["deleted"]} == hashes_of(data)
    assert names_on_nodes(settings) == hashes_of(data)
    assert store.meta.db.chunks.count_documents({"state": CHUNK_STORED}) == 4
    assert store.meta.operations.last_event("gc") is None
    assert gc_after_grace(store) == {**plan, "dry_run": False, "seconds": pytest.approx(0, abs=60)}


def test_gc_command_prints_its_plan_then_runs(store, settings):
    data = random_bytes(2 * CHUNK + 1, 61)
    f = put(store, data)
    store.delete("t1", f.id)
    now_settings = settings.with_overrides(gc_grace_s=0)
    dry = cli(now_settings, "gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would delete 3 chunk(s), {len(data)} bytes" in dry.stdout
    for h in hashes_of(data):
        assert f"would delete chunk {h}" in dry.stdout
    assert names_on_nodes(settings) == hashes_of(data)
    run = cli(now_settings, "gc")
    assert run.returncode == 0, run.stderr
    assert f"deleted 3 chunk(s), {len(data)} bytes" in run.stdout
    assert names_on_nodes(settings) == set()


def test_gc_skips_while_another_run_holds_the_lock(store, settings):
    f = put(store, random_bytes(2 * CHUNK, 70))
    store.delete("t1", f.id)
    other = store.redis.lock(GC_LOCK, timeout=60)
    assert other.acquire(blocking=False)
    try:
        assert gc_after_grace(store)["skipped_locked"] is True
        assert len(names_on_nodes(settings)) == 2
    finally:
        other.release()
    assert gc_after_grace(store)["chunks"] == 2


def test_gc_lock_expires_so_a_killed_run_does_not_block_gc_forever(store, settings, monkeypatch):
    f = put(store, random_bytes(2 * CHUNK, 71))
    store.delete("t1", f.id)
    ttl_seen = []
    real = store.meta.chunks.gc_candidates

    def spy(*args, **kw):
        ttl_seen.append(store.redis.pttl(GC_LOCK))
        return real(*args, **kw)

    monkeypatch.setattr(store.meta.chunks, "gc_candidates", spy)
    dead = store.redis.lock(GC_LOCK, timeout=0.3)  # a run that was killed holding the lock
    assert dead.acquire(blocking=False)
    assert gc_after_grace(store)["skipped_locked"] is True
    deadline = time.monotonic() + 10
    while store.redis.exists(GC_LOCK) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gc_after_grace(store)["chunks"] == 2
    assert ttl_seen and all(0 < ttl <= settings.gc_lock_ttl_s * 1000 for ttl in ttl_seen)
    assert not store.redis.exists(GC_LOCK)  # released at the end of the run


# --- GC against ingest: the race the protocol exists for --------------------------------------------

def test_upload_of_deleted_content_between_gc_plan_and_delete_keeps_its_chunks(store, settings, monkeypatch):
    """B's manifest appears and B is ingested after GC planned; GC's recheck gives the chunks back."""
    data = random_bytes(5 * CHUNK, 80)
    a = put(store, data)
    store.delete("t1", a.id)
    real = store.meta.files.referenced_hashes
    late: list[str] = []

    def plan_then_upload(hashes):
        found = real(hashes)
        if not late:  # right after GC's plan: B arrives and is ingested (a dedup hit on every chunk)
            late.append(put(store, data, name="b").id)
        return found

    monkeypatch.setattr(store.meta.files, "referenced_hashes", plan_then_upload)
    report = gc_after_grace(store)  # a cutoff after B's stamps: only the recheck can save B
    assert report["chunks"] == 0 and report["given_back"] == 5
    monkeypatch.undo()
    assert names_on_nodes(settings) == hashes_of(data)
    assert store.meta.db.chunks.count_documents({"state": CHUNK_STORED}) == 5
    assert read_all(store, store.get_readable("t1", late[0])) == data


def test_ingest_meeting_a_chunk_being_deleted_waits_then_writes_it_again(store, settings, monkeypatch):
    """GC took the chunks and found no manifest; B uploads now, its ingest must not dedup onto them."""
    data = random_bytes(4 * CHUNK, 81)
    a = put(store, data)
    store.delete("t1", a.id)
    real_delete = store.chunks.delete
    busy: list[str] = []

    def upload_during_delete(node, h):
        if not busy:
            b = store.receive("t1", "b", None, pieces(data))
            busy.append(b.id)
            with pytest.raises(ChunkBusy):
                store.ingest(b.id)
        return real_delete(node, h)

    monkeypatch.setattr(store.chunks, "delete", upload_during_delete)
    report = gc_after_grace(store)
    assert report["chunks"] == 1 and report["given_back"] == 3  # B's manifest names the rest by then
    monkeypatch.undo()
    assert store.ingest(busy[0]).status == "stored"  # the retry claims them anew from B's spool
    assert names_on_nodes(settings) == hashes_of(data)
    assert read_all(store, store.get_readable("t1", busy[0])) == data


def test_ingest_stamp_after_gc_took_a_chunk_fails_and_retries(store, settings, monkeypatch):
    """B read the chunks as stored, then GC took them: B's compare-and-set stamp fails."""
    data = random_bytes(3 * CHUNK, 82)
    a = put(store, data)
    b = store.receive("t1", "b", None, pieces(data))
    real_touch = store.meta.chunks.touch_chunks
    taken = []

    def gc_first(hashes):
        if not taken:
            for h, d in store.meta.chunks.chunk_docs(hashes).items():
                taken.append(store.meta.chunks.begin_chunk_delete(h, time.time() + 1, d["state"]))
        return real_touch(hashes)

    monkeypatch.setattr(store.meta.chunks, "touch_chunks", gc_first)
    with pytest.raises(ChunkBusy):
        store.ingest(b.id)
    monkeypatch.undo()
    assert taken == [True] * 3
    assert gc_after_grace(store)["chunks"] == 0  # the manifests of a and b name them: given back
    assert store.ingest(b.id).status == "stored"
    assert read_all(store, store.get_readable("t1", b.id)) == data
    assert read_all(store, store.get_readable("t1", a.id)) == data


def test_ingest_never_stores_a_file_over_a_chunk_that_vanished_after_its_claim_lost(store, monkeypatch):
    data = random_bytes(2 * CHUNK, 83)
    f = store.receive("t1", "b", None, pieces(data))
    h = sorted(hashes_of(data))[0]
    real_claim = store.meta.chunks.claim_chunks

    def other_claims_then_gc_deletes(claims):
        store.meta.chunks.claim_chunk({"_id": h, "size": CHUNK, "xxh3": "x", "node": "node-1"})
        won = real_claim(claims)
        store.meta.db.chunks.delete_one({"_id": h})
        return won

    monkeypatch.setattr(store.meta.chunks, "claim_chunks", other_claims_then_gc_deletes)
    with pytest.raises(ChunkBusy):
        store.ingest(f.id)
    monkeypatch.undo()
    assert store.ingest(f.id).status == "stored"
    assert read_all(store, store.get_readable("t1", f.id)) == data


def test_ingest_finding_its_write_taken_by_gc_retries_and_leaves_chunks_stored(store, monkeypatch):
    data = random_bytes(2 * CHUNK, 84)
    f = store.receive("t1", "b", None, pieces(data))
    real_mark = store.meta.chunks.mark_chunks_stored

    def gc_takes_them_first(hashes, *rest):
        for h in hashes:  # GC takes the claimed chunks; its recheck then finds the manifest
            store.meta.chunks.begin_chunk_delete(h, time.time() + 1, CHUNK_WRITING)
        real_mark(hashes, *rest)
        for h in hashes:
            store.meta.chunks.cancel_chunk_delete(h, CHUNK_WRITING)

    monkeypatch.setattr(store.meta.chunks, "mark_chunks_stored", gc_takes_them_first)
    with pytest.raises(ChunkBusy):
        store.ingest(f.id)
    monkeypatch.undo()
    assert store.ingest(f.id).status == "stored"
    states = {d["state"] for d in store.meta.chunks.chunk_docs(hashes_of(data)).values()}
    assert states == {CHUNK_STORED}
    assert read_all(store, store.get_readable("t1", f.id)) == data


def test_two_ingests_of_one_file_racing_to_move_the_same_spooled_chunk_both_end_stored(whole_store, monkeypatch):
    store, settings = whole_store, whole_store.settings  # a whole copy is moved (renamed) out of the spool
    data = random_bytes(3 * CHUNK, 87)
    f = store.receive("t1", "b", None, pieces(data))
    real_place = store.chunks.place
    raced = []

    def other_ingest_moves_it_first(src, node, h, batch=None):
        if not raced:
            raced.append(h)
            real_place(src, node, h)  # the re-queued twin of this ingest, one step ahead
        return real_place(src, node, h, batch)

    monkeypatch.setattr(store.chunks, "place", other_ingest_moves_it_first)
    assert store.ingest(f.id).status == "stored"
    assert raced and names_on_nodes(settings) == hashes_of(data)
    assert read_all(store, store.get_readable("t1", f.id)) == data


def test_ingest_whose_twin_moved_the_chunks_between_its_two_looks_never_fails_the_file(store, settings,
                                                                                     monkeypatch):
    """A re-queued ingest runs beside the first: one finds a chunk neither on its node nor, a moment
    later, in the spool (the twin moved it): that is not a lost chunk."""
    data = random_bytes(6 * CHUNK, 88)
    f = store.receive("t1", "b", None, pieces(data))
    real_spooled = store.ingestor._spooled
    twin: list[str] = []

    def twin_runs_first(file_id, index):
        if not twin:
            twin.append("running")
            monkeypatch.setattr(store.ingestor, "_spooled", real_spooled)
            twin.append(store.ingest(file_id).status)  # the twin stores the file and drops the spool
            monkeypatch.setattr(store.ingestor, "_spooled", twin_runs_first)
        return real_spooled(file_id, index)

    monkeypatch.setattr(store.ingestor, "_spooled", twin_runs_first)
    report = store.ingest(f.id)
    assert twin == ["running", "stored"] and report.status == "stored" and report.missing == []
    assert store.get_readable("t1", f.id).status == "stored"
    assert read_all(store, store.get_readable("t1", f.id)) == data


def test_ingest_marks_the_file_failed_when_a_known_chunk_is_on_no_node_and_not_in_its_spool(store, settings):
    data = random_bytes(3 * CHUNK, 85)
    a = put(store, data)
    victim = sorted(hashes_of(data))[0]
    store.chunkio.delete(store.meta.chunks.chunk_docs([victim])[victim])  # every fragment of it
    b = store.receive("t1", "b", None, pieces(data))
    index = [hashlib.sha256(data[i:i + CHUNK]).hexdigest() for i in range(0, len(data), CHUNK)].index(victim)
    store.spool.chunk_path(b.id, index).unlink()
    report = store.ingest(b.id)
    assert report.status == "failed" and report.missing == [victim]
    assert store.meta.db.files.find_one({"_id": ObjectId(b.id)})["missingChunks"] == [victim]
    assert store.get("t1", a.id).status == "stored"  # only the file being ingested is failed


def test_gc_racing_a_new_upload_of_the_deleted_content_never_loses_a_byte(store, settings):
    """File A deleted while file B with the same content uploads: loop the race, then read B."""
    store.settings = settings.with_overrides(gc_grace_s=0)
    rng = random.Random(86)
    for round_ in range(30):
        data = random_bytes(6 * CHUNK, 1000 + round_)
        a = put(store, data)
        start = threading.Barrier(2)
        b_ids: list[str] = []
        errors: list[BaseException] = []

        def collector():
            try:
                start.wait()
                time.sleep(rng.random() * 0.01)
                store.delete("t1", a.id)
                store.garbage_collector().collect()
            except BaseException as exc:
                errors.append(exc)

        def uploader():
            try:
                start.wait()
                time.sleep(rng.random() * 0.01)
                f = store.receive("t1", "b", None, pieces(data))
                b_ids.append(f.id)
                assert ingest_until_final(store, f.id) == "stored"
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=collector), threading.Thread(target=uploader)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert read_all(store, store.get_readable("t1", b_ids[0])) == data, f"round {round_}"
        store.garbage_collector().collect()  # B still names every chunk: nothing of it may go now either
        assert read_all(store, store.get_readable("t1", b_ids[0])) == data, f"round {round_}"
        store.delete("t1", b_ids[0])
    store.garbage_collector().collect(now=time.time() + 1)
    assert chunk_files(settings) == []


# --- abandoned work ------------------------------------------------------------------------------

def test_abandoned_spool_and_its_manifest_go_after_the_timeout_live_ones_stay(store, settings):
    dead = "0" * 23 + "1"  # an upload whose web process died: spool and one manifest page, no file
    store.spool.create(dead)
    store.spool.chunk_path(dead, 0).write_bytes(b"x" * 10)
    store.meta.files.put_manifest_page(dead, 0, 0, 0, ["e" * 64], ["x"], [1])
    queued = store.receive("t1", "q", None, pieces(random_bytes(2 * CHUNK, 90)))
    assert store.garbage_collector().clean_spool() == []  # too young
    later = time.time() + settings.spool_abandon_s + 1
    assert store.garbage_collector().clean_spool(now=later) == [dead]
    assert not store.spool.exists(dead)
    assert store.meta.db.manifests.count_documents({"file": dead}) == 0
    assert store.spool.exists(queued.id)  # a queued file still needs its spool
    assert store.ingest(queued.id).status == "stored"


def test_a_delete_interrupted_before_its_manifest_went_is_finished_by_the_sweep(store, settings):
    data = random_bytes(3 * CHUNK, 91)
    f = put(store, data)
    assert store.meta.files.mark_deleted(f.id, "t1")  # the web process died right after this
    assert gc_after_grace(store)["chunks"] == 0
    store.garbage_collector().clean_spool()
    assert store.meta.db.manifests.count_documents({"file": f.id}) == 0
    assert gc_after_grace(store)["chunks"] == 3
    assert chunk_files(settings) == []


def test_stuck_files_are_found_once_per_period(store, settings):
    f = store.receive("t1", "q", None, pieces(random_bytes(CHUNK, 92)))
    gc = store.garbage_collector()
    assert gc.stuck_files() == []
    later = time.time() + settings.stuck_after_s + 1
    assert gc.stuck_files(now=later) == [f.id]
    assert gc.stuck_files(now=time.time() + settings.stuck_after_s / 2) == []  # stamped when re-queued


# --- fsck ----------------------------------------------------------------------------------------

def test_fsck_of_a_healthy_store_is_clean_and_the_command_exits_0(store, settings):
    put(store, random_bytes(5 * CHUNK, 100))
    report = store.fsck().run()
    assert report.clean and report.files_checked == 1 and report.chunk_files_checked == 5 * FRAGS
    done = cli(settings, "fsck")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "clean" in done.stdout


def test_fsck_quarantines_a_corrupt_chunk_and_fails_the_files_that_need_it(whole_store):
    store, settings = whole_store, whole_store.settings  # one copy: nothing to rebuild it from
    data = random_bytes(3 * CHUNK, 101)
    f = put(store, data)
    victim = sorted(hashes_of(data))[1]
    node = nodes_of(store.meta.chunks.chunk_docs([victim])[victim])[0]
    path = store.chunks.path(node, victim)
    raw = bytearray(path.read_bytes())
    raw[7] ^= 0x01
    path.write_bytes(bytes(raw))

    checked = cli(settings, "fsck")
    assert checked.returncode == 1 and f"corrupt       chunk {victim} on {node}" in checked.stdout
    assert path.exists()  # a check alone changes nothing

    report = store.fsck().run(repair=True)
    assert report.corrupt.count == 1 and report.repaired["quarantined"] == 1
    assert not path.exists()
    quarantined = list((settings.nodes[int(node[-1]) - 1] / ".quarantine").iterdir())
    assert [q.read_bytes() for q in quarantined] == [bytes(raw)]  # moved aside, never deleted
    assert store.get("t1", f.id).status == "failed"
    assert store.meta.db.files.find_one({"_id": ObjectId(f.id)})["missingChunks"] == [victim]
    assert store.fsck().run().clean


def test_fsck_fails_a_stored_file_whose_chunk_is_missing(whole_store):
    store = whole_store
    data = random_bytes(4 * CHUNK, 102)
    f = put(store, data)
    victim = sorted(hashes_of(data))[2]
    store.chunks.delete(nodes_of(store.meta.chunks.chunk_docs([victim])[victim])[0], victim)
    report = store.fsck().run()
    assert report.missing.count == 1 and report.missing.sample[0]["chunk"] == victim
    assert store.get_readable("t1", f.id).status == "stored"  # no repair asked
    repaired = store.fsck().run(repair=True)
    assert repaired.repaired["failed"] == 1
    status = store.get("t1", f.id)
    assert status.status == "failed" and "lost" in status.error
    assert store.meta.db.files.find_one({"_id": ObjectId(f.id)})["missingChunks"] == [victim]
    assert store.fsck().run().clean


def test_fsck_removes_only_unknown_files_older_than_the_grace_period(store, settings):
    put(store, random_bytes(CHUNK, 103))
    stray_hash = hashlib.sha256(b"stray").hexdigest()
    store.chunks.write("node-2", stray_hash, b"stray")
    temp = store.chunks.path("node-3", stray_hash).parent / ".tmp-leftover"
    temp.parent.mkdir(parents=True)
    temp.write_bytes(b"half a chunk")
    report = store.fsck().run(repair=True)
    assert report.unknown.count == 2 and report.repaired["removed"] == 0  # young: maybe in flight
    assert store.chunks.exists("node-2", stray_hash) and temp.exists()
    later = time.time() + settings.gc_grace_s + 1
    report = store.fsck().run(repair=True, now=later)
    assert report.unknown.count == 2 and report.repaired["removed"] == 2
    assert not store.chunks.exists("node-2", stray_hash) and not temp.exists()
    assert store.fsck().run().clean


def test_stray_claimed_while_being_removed_is_put_back(store):
    h = hashlib.sha256(b"claimed").hexdigest()
    store.chunks.write("node-1", h, b"claimed")
    entry = next(e for e in store.chunks.iter_node("node-1") if e.chunk_hash == h)
    assert store.chunks.discard_stray(entry, lambda: True) is False
    assert store.chunks.read("node-1", h) == b"claimed"
    assert store.chunks.discard_stray(entry, lambda: False) is True
    assert not store.chunks.exists("node-1", h)


def test_fsck_reports_chunks_no_file_references_until_gc_takes_them(store, settings):
    f = put(store, random_bytes(2 * CHUNK, 104))
    store.delete("t1", f.id)
    report = store.fsck().run()
    assert report.unreferenced.count == 2 and not report.clean
    assert cli(settings, "fsck").returncode == 1
    gc_after_grace(store)
    assert store.fsck().run().clean


def test_fsck_requeues_stuck_files_and_fails_those_whose_bytes_are_gone(store, settings):
    alive = store.receive("t1", "alive", None, pieces(random_bytes(2 * CHUNK, 105)))
    lost = store.receive("t1", "lost", None, pieces(random_bytes(2 * CHUNK, 106)))
    store.spool.chunk_path(lost.id, 1).unlink()  # e.g. the spool disk lost it
    queued: list[str] = []
    report = store.fsck().run(repair=True, enqueue=queued.append, now=time.time() + settings.stuck_after_s + 1)
    assert report.stuck.count == 2
    assert queued == [alive.id] and report.repaired == {"quarantined": 0, "removed": 0, "requeued": 1,
                                                        "failed": 1, "healed": 0}
    assert store.get("t1", lost.id).status == "failed"
    assert len(store.meta.db.files.find_one({"_id": ObjectId(lost.id)})["missingChunks"]) == 1
    assert store.ingest(alive.id).status == "stored"
    assert store.fsck().run().clean


def test_fsck_does_not_count_a_file_being_ingested_right_now_as_stuck(store, settings):
    store.receive("t1", "fresh", None, pieces(random_bytes(CHUNK, 107)))
    assert store.fsck().run().stuck.count == 0


# --- over HTTP, with beat collecting on its own -------------------------------------------------------

@pytest.fixture(scope="module")
def beat_stack(tmp_path_factory, backends):
    s = Stack(tmp_path_factory.mktemp("lifecycle"), backends, beat=True, gc_interval_s=1, gc_grace_s=1)
    yield s
    s.stop()


def test_http_delete_then_beat_gc_gives_the_space_back(beat_stack):
    s = beat_stack
    a, b, c, d, e = (random_bytes(MiB, 200 + i) for i in range(5))
    first, second = s.put(a + b + c + d, "first.bin"), s.put(c + d + e, "second.bin")

    r = requests.delete(s.url(f"/api/files/{first}"), timeout=30)
    assert r.status_code == 204 and r.content == b""
    for path in (f"/api/files/{first}", f"/api/files/{first}/status"):
        gone = requests.get(s.url(path), timeout=30)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    assert [f["fileId"] for f in requests.get(s.url("/api/files"), timeout=30).json()["files"]] == [second]
    again = requests.delete(s.url(f"/api/files/{first}"), timeout=30)
    assert again.status_code == 404 and again.json()["success"] is False
    bad = requests.delete(s.url("/api/files/not-an-id"), timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_id"

    keep = hashes_of(c + d + e, MiB)
    wait_for(lambda: {Path(p).name.partition(".")[0] for p in s.chunk_files()} == keep,
             what="GC of the unshared chunks")
    assert s.download(second).content == c + d + e

    assert requests.delete(s.url(f"/api/files/{second}"), timeout=30).status_code == 204
    wait_for(lambda: not s.chunk_files(), what="GC of every chunk")
    stats = requests.get(s.url("/api/stats"), timeout=30).json()
    assert stats["physicalBytes"] == 0 and stats["chunks"] == 0
    assert stats["lastGc"] is not None
    assert abs(datetime.fromisoformat(stats["lastGc"]["at"].replace("Z", "+00:00")).timestamp() - time.time()) < 600
