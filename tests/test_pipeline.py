"""The pipeline alone (no Flask, no Celery) against a real Redis and nx-27017."""
from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pymongo
import pymongo.monitoring
import pytest
import xxhash

from config.settings import Settings
from pipeline.datapath.ingest import IngestReport
from pipeline.datapath.upload import display_name
from pipeline.errors import ChunkUnavailable, RangeNotSatisfiable
from pipeline.metadata.repositories import Metadata
from pipeline.storage.chunkio import fragment_name, fragments, nodes_of
from pipeline.storage.chunkstore import parse_name
from tests.stack import random_bytes

CHUNK = 64 * 1024
FRAGS = sum(Settings().ec_layout)  # chunk files per chunk in the default layout


def pieces(data: bytes, size: int = 10_000):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def put(store, data: bytes, name: str = "f.bin", tenant: str = "t1"):
    f = store.receive(tenant, name, "application/octet-stream", pieces(data))
    report = store.ingest(f.id)
    assert report.status == "stored"
    return store.get_readable(tenant, f.id)


def read_all(store, f, start=0, stop=None) -> bytes:
    return b"".join(store.read(f, start, stop))


def chunk_files(settings) -> list[Path]:
    return [p for n in settings.nodes for p in Path(n).glob("??/??/*") if p.is_file() and parse_name(p.name)]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 11 * CHUNK + 7])
def test_round_trip_is_byte_exact(store, size):
    data = random_bytes(size, seed=size)
    f = put(store, data)
    assert f.size == size
    assert f.sha256 == hashlib.sha256(data).hexdigest()
    assert f.chunk_count == -(-size // CHUNK)
    assert read_all(store, f) == data


def test_spool_directory_is_removed_after_ingest(store, settings):
    f = put(store, random_bytes(3 * CHUNK, 1))
    assert not (settings.spool_dir / f.id).exists()


def test_long_manifest_is_paged(store):
    data = random_bytes(10 * CHUNK, 2)  # page size 4 in these settings: 3 pages
    f = put(store, data)
    pages = list(store.meta.files.iter_manifest(f.id))
    assert [len(p.hashes) for p in pages] == [4, 4, 2]
    assert read_all(store, f, 5 * CHUNK - 3, 9 * CHUNK + 5) == data[5 * CHUNK - 3: 9 * CHUNK + 5]


def test_ranged_reads_of_a_one_page_file_ask_for_its_page_once(store):
    data = random_bytes(3 * CHUNK + 5, 3)  # one page (page size 4 here)
    f = put(store, data)
    assert read_all(store, f, CHUNK, CHUNK + 10) == data[CHUNK:CHUNK + 10]
    # the page is immutable: later reads of the file take it from this process's copy (removed
    # from MongoDB here only to show that no query for it is made)
    store.meta.files.delete_manifest(f.id)
    assert read_all(store, f, 2 * CHUNK - 1, 3 * CHUNK + 2) == data[2 * CHUNK - 1:3 * CHUNK + 2]
    assert read_all(store, f) == data


def test_ranged_reads_of_a_paged_file_find_their_page_by_offset_and_ask_for_each_page_once(store):
    data = random_bytes(10 * CHUNK + 7, 8)  # three pages (page size 4 here)
    f = put(store, data)
    spans = [(0, 10), (4 * CHUNK - 5, 4 * CHUNK + 5), (10 * CHUNK, 10 * CHUNK + 7), (5 * CHUNK + 1, 5 * CHUNK + 2),
             (3, 9 * CHUNK)]
    for a, b in spans:
        assert read_all(store, f, a, b) == data[a:b]
    # pages and their offsets are immutable: later reads take them from this process's copies
    store.meta.files.delete_manifest(f.id)
    for a, b in spans + [(0, None)]:
        assert read_all(store, f, a, b) == data[a:b]


def test_second_upload_of_same_content_adds_no_chunk(store, settings):
    data = random_bytes(6 * CHUNK, 3)
    put(store, data)
    before = sorted(chunk_files(settings))
    f2 = put(store, data, name="again.bin")
    assert sorted(chunk_files(settings)) == before
    assert read_all(store, f2) == data


def test_repeated_chunk_within_a_file_is_stored_once(store, settings):
    block = random_bytes(CHUNK, 4)
    f = put(store, block * 5)
    assert len(chunk_files(settings)) == FRAGS
    assert read_all(store, f) == block * 5


def test_ingest_twice_is_the_same_as_once(store, settings):
    data = random_bytes(5 * CHUNK, 5)
    f = store.receive("t1", "x", None, pieces(data))
    assert store.ingest(f.id).status == "stored"
    files = sorted(chunk_files(settings))
    assert store.ingest(f.id).status == "stored"
    assert sorted(chunk_files(settings)) == files
    assert read_all(store, store.get_readable("t1", f.id)) == data


def test_ingest_resumes_after_a_crash_halfway(store, settings):
    data = random_bytes(9 * CHUNK, 6)
    f = store.receive("t1", "x", None, pieces(data))
    first_page = next(store.meta.files.iter_manifest(f.id))
    # a worker died after placing the first page's chunks, before marking anything stored
    store.ingestor._ingest_page(store.meta.files.get_file(f.id), first_page, IngestReport(f.id, "queued"))
    assert store.meta.files.get_file(f.id).status == "queued"
    assert store.ingest(f.id).status == "stored"
    assert len(chunk_files(settings)) == 9 * FRAGS
    assert read_all(store, store.get_readable("t1", f.id)) == data


def test_concurrent_ingests_of_one_content_leave_one_copy(store, settings):
    data = random_bytes(8 * CHUNK, 7)
    ids = [store.receive("t1", f"c{i}", None, pieces(data)).id for i in range(6)]
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(store.ingest(i).status)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["stored"] * 6
    assert len(chunk_files(settings)) == 8 * FRAGS
    assert store.meta.db.chunks.count_documents({}) == 8
    for i in ids:
        assert read_all(store, store.get_readable("t1", i)) == data


def test_round_robin_spreads_new_chunks_evenly(store, settings):
    put(store, random_bytes(30 * CHUNK, 8))
    per_node = [len([p for p in Path(n).rglob("*") if p.is_file()]) for n in settings.nodes]
    assert per_node == [10 * FRAGS] * 3
    # fragment i of successive chunks rotates over the nodes: each node holds 10 of each index
    by_index = {(p.parent.parent.parent.name, p.name.rpartition(".")[2]) for p in chunk_files(settings)}
    assert len(by_index) == 3 * FRAGS


def test_round_robin_spreads_whole_copies_evenly(whole_store):
    put(whole_store, random_bytes(30 * CHUNK, 8))
    per_node = [len([p for p in Path(n).rglob("*") if p.is_file()]) for n in whole_store.settings.nodes]
    assert per_node == [10, 10, 10]


def test_chunk_fragments_are_on_distinct_nodes_with_their_own_checksums(store):
    data = random_bytes(4 * CHUNK + 9, 11)
    f = put(store, data)
    docs = store.meta.chunks.chunk_docs(next(store.meta.files.iter_manifest(f.id)).hashes)
    for h, doc in docs.items():
        assert (doc["k"], doc["m"]) == (2, 1) and doc["state"] == "stored" and "needsHeal" not in doc
        assert sorted(f["i"] for f in fragments(doc)) == [0, 1, 2]
        assert len(set(nodes_of(doc))) == 3
        for frag in fragments(doc):
            raw = store.chunks.path(frag["node"], fragment_name(h, frag["i"], 2, 1)).read_bytes()
            assert len(raw) == frag["size"] and xxhash.xxh3_128_hexdigest(raw) == frag["xxh3"]
    assert read_all(store, f) == data


def _flip(path: Path, at: int = 100) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("index", [0, 1, 2])
def test_corrupt_fragment_is_read_around_quarantined_and_flagged_for_heal(store, index, caplog):
    data = random_bytes(3 * CHUNK, 12)
    f = put(store, data)
    victim = next(store.meta.files.iter_manifest(f.id)).hashes[1]
    doc = store.meta.chunks.chunk_docs([victim])[victim]
    frag = next(x for x in fragments(doc) if x["i"] == index)
    path = store.chunks.path(frag["node"], fragment_name(victim, index, 2, 1))
    _flip(path)
    queued = []
    store.heal_enqueue = lambda *hashes: queued.extend(hashes)
    assert read_all(store, f) == data
    if index < 2:  # a data fragment is read, found corrupt, quarantined; parity replaces it
        assert not path.exists()
        assert [n for n in store.chunks.quarantined(frag["node"]) if n.startswith(f"{victim}.{index}.")]
        assert store.meta.chunks.chunk_docs([victim])[victim].get("needsHeal")
        assert queued == [victim]
        assert read_all(store, f) == data and queued == [victim]  # flagged once, queued once
    else:  # parity is not read while every data fragment is good
        assert path.exists() and queued == []


def test_read_fails_when_fewer_than_k_fragments_remain(store):
    f = put(store, random_bytes(2 * CHUNK, 13))
    h = next(store.meta.files.iter_manifest(f.id)).hashes[0]
    doc = store.meta.chunks.chunk_docs([h])[h]
    for frag in fragments(doc)[:2]:
        store.chunks.path(frag["node"], fragment_name(h, frag["i"], 2, 1)).unlink()
    with pytest.raises(ChunkUnavailable) as err:
        read_all(store, f)
    assert err.value.chunk_hash == h


def test_a_missing_node_is_read_around_and_skipped_by_new_writes(store, settings):
    import shutil
    old = random_bytes(6 * CHUNK, 14)
    f = put(store, old)
    shutil.rmtree(settings.nodes[2])
    assert read_all(store, f) == old
    assert not settings.nodes[2].exists()  # reads and writes never re-create a missing node
    assert store.health()["layout"]["writableNodes"] == 2


def test_corrupt_chunk_aborts_read_and_names_the_chunk(whole_store, caplog):
    store = whole_store
    data = random_bytes(3 * CHUNK, 9)
    f = put(store, data)
    page = next(store.meta.files.iter_manifest(f.id))
    victim = page.hashes[1]
    doc = store.meta.chunks.chunk_docs([victim])[victim]
    path = store.chunks.path(nodes_of(doc)[0], victim)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    out = []
    with pytest.raises(ChunkUnavailable) as err:
        for piece in store.read(f):
            out.append(piece)
    assert err.value.chunk_hash == victim
    assert b"".join(out) == data[:CHUNK]  # only the verified first chunk was handed out
    assert victim in caplog.text and nodes_of(doc)[0] in caplog.text


def test_missing_chunk_aborts_read(whole_store):
    store = whole_store
    f = put(store, random_bytes(2 * CHUNK, 10))
    h = next(store.meta.files.iter_manifest(f.id)).hashes[0]
    node = nodes_of(store.meta.chunks.chunk_docs([h])[h])[0]
    store.chunks.path(node, h).unlink()
    with pytest.raises(ChunkUnavailable):
        read_all(store, f)


def test_range_outside_file_is_refused(store):
    f = put(store, b"abc")
    with pytest.raises(RangeNotSatisfiable):
        list(store.read(f, 3, 4))


def test_failed_upload_leaves_no_spool_and_no_manifest(store, settings):
    def broken():
        yield b"x" * (3 * CHUNK)
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        store.receive("t1", "x", None, broken())
    assert list(settings.spool_dir.iterdir()) == []
    assert store.meta.db.manifests.count_documents({}) == 0
    assert store.meta.db.files.count_documents({}) == 0


@pytest.mark.parametrize("raw,expected", [
    ("../../etc/passwd", "passwd"),
    ("/abs/path/name.txt", "name.txt"),
    ("C:\\Windows\\system32\\evil.exe", "evil.exe"),
    ("nul\x00and\x07ctrl.txt", "nulandctrl.txt"),
    ("..", "file"),
    ("", "file"),
    ("报告 🚀.pdf", "报告 🚀.pdf"),
])
def test_display_name_is_never_a_path(raw, expected):
    assert display_name(raw) == expected


def test_display_name_is_bounded_and_keeps_extension():
    name = display_name("a" * 1000 + ".tar")
    assert len(name) == 255 and name.endswith(".tar")


def test_a_read_of_many_damaged_chunks_flags_them_together_and_queues_one_heal(store, settings):
    import shutil

    data = random_bytes(7 * CHUNK, 14)  # two pages (page size 4 here)
    f = put(store, data)
    shutil.rmtree(settings.nodes[0])  # a node gone: some fragment of nearly every chunk with it
    calls: list[tuple[str, ...]] = []
    store.heal_enqueue = lambda *hashes: calls.append(hashes)
    assert read_all(store, f) == data
    hashes = [h for page in store.meta.files.iter_manifest(f.id) for h in page.hashes]
    docs = store.meta.chunks.chunk_docs(hashes)
    # parity is not read while the data fragments are good: the chunks found damaged are those
    # that had a data fragment on the lost node
    hit = sorted(h for h, d in docs.items() if any(x["node"] == "node-1" and x["i"] < 2 for x in fragments(d)))
    assert hit and all(docs[h].get("needsHeal") for h in hit)
    assert sorted(h for c in calls for h in c) == hit and len(calls) <= 2  # a heal task per page at most
    calls.clear()
    assert read_all(store, f) == data and calls == []  # flagged already: nothing queued again


class CommandCounter(pymongo.monitoring.CommandListener):
    def __init__(self):
        self.commands: list[str] = []

    def started(self, event):
        self.commands.append(event.command_name)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def counted_repo(settings) -> tuple[Metadata, CommandCounter]:
    """A repository on the store's database whose client counts the commands it sends."""
    counter = CommandCounter()
    client = pymongo.MongoClient(settings.mongo_url, event_listeners=[counter], tz_aware=False)
    return Metadata(client, settings.mongo_db), counter


def test_small_files_are_ingested_together_with_one_query_per_step(store, settings):
    before = put(store, random_bytes(5000, 40))  # its chunk is stored already
    bodies = [random_bytes(3000 + i, 41 + i) for i in range(4)]
    bodies += [bodies[0], random_bytes(5000, 40)]  # the same as a file of the batch; as one stored before
    small = [store.receive("t1", f"s{i}", None, pieces(b)).id for i, b in enumerate(bodies)]
    big_data = random_bytes(10 * CHUNK, 49)  # three manifest pages
    big = store.receive("t1", "big", None, pieces(big_data)).id
    empty = store.receive("t1", "empty", None, pieces(b"")).id

    meta, counter = counted_repo(settings)
    store.ingestor.meta = meta
    try:
        done, rest = store.ingest_many([*small, big, empty])
    finally:
        store.ingestor.meta = store.meta
        meta.client.close()
    assert sorted(done) == sorted(small)
    assert rest == [big, empty]
    assert [(done[i].new_chunks, done[i].deduplicated) for i in small] == [(1, 0)] * 4 + [(0, 1), (0, 1)]
    # one query per step for the six files (one file alone takes seven): their documents, manifests,
    # chunk documents, the stored chunk's stamp (update and find), claims, chunks stored, files
    # stored; none is marked processing first
    sent = [c for c in counter.commands if c != "endSessions"]
    assert len(sent) <= 8, sent
    for i, body in zip(small, bodies):
        f = store.get_readable("t1", i)
        assert f.status == "stored" and f.chunks_done == 1
        assert read_all(store, f) == body
        assert not (settings.spool_dir / i).exists()
    assert len(chunk_files(settings)) == 5 * FRAGS  # the four new contents and the one before
    assert store.meta.db.chunks.count_documents({"state": "stored"}) == 5
    # the files the batch left are ingested one at a time, as always
    assert store.meta.files.get_file(big).status == "queued"
    assert store.ingest(big).status == "stored" and store.ingest(empty).status == "stored"
    assert read_all(store, store.get_readable("t1", big)) == big_data
    assert read_all(store, before) == random_bytes(5000, 40)


def test_a_batch_with_a_lost_spooled_chunk_leaves_every_file_to_its_own_ingest(store, settings):
    bodies = [random_bytes(2000 + i, 60 + i) for i in range(3)]
    ids = [store.receive("t1", f"s{i}", None, pieces(b)).id for i, b in enumerate(bodies)]
    store.spool.chunk_path(ids[1], 0).unlink()  # lost before ingest
    done, rest = store.ingest_many(ids)
    assert done == {} and rest == ids
    assert not store.meta.db.chunks.count_documents({"state": "writing"})  # its claims went with it
    reports = [store.ingest(i) for i in ids]
    assert [r.status for r in reports] == ["stored", "failed", "stored"]
    for i in (0, 2):
        assert read_all(store, store.get_readable("t1", ids[i])) == bodies[i]
    assert len(chunk_files(settings)) == 2 * FRAGS


def test_ingest_makes_its_fragments_durable_before_any_chunk_says_stored(store, settings, monkeypatch):
    """The fragments of a page are synced once, together: when that sync fails, no chunk and no file
    is stored, the spool keeps every byte, and the next ingest stores the file byte-exact."""
    from pipeline.storage.chunkstore import SyncBatch
    if not SyncBatch.available:
        pytest.skip("no syncfs on this platform: every fragment is fsynced on its own")
    data = random_bytes(3 * CHUNK + 77, 4401)
    f = store.receive("t1", "d.bin", None, pieces(data))
    committed = []

    def failing_commit(self):
        committed.append(sorted(self._fds))
        raise OSError(5, "syncfs: Input/output error")
    monkeypatch.setattr(SyncBatch, "commit", failing_commit)
    with pytest.raises(OSError):
        store.ingest(f.id)
    assert committed and len(committed[0]) == 1  # every node and the spool on one filesystem: one sync
    assert store.meta.db.chunks.count_documents({"state": "stored"}) == 0
    assert store.meta.files.get_file(f.id).status != "stored" and store.spool.exists(f.id)
    monkeypatch.undo()
    assert store.ingest(f.id).status == "stored"
    assert read_all(store, store.get_readable("t1", f.id)) == data and not store.spool.exists(f.id)


def test_a_sync_batch_keeps_one_descriptor_per_filesystem_and_releases_them(tmp_path):
    from pipeline.storage.chunkstore import SyncBatch
    if not SyncBatch.available:
        pytest.skip("no syncfs on this platform")
    dirs = [tmp_path / f"n{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    before = len(os.listdir("/proc/self/fd"))
    with SyncBatch() as batch:
        for d in dirs * 2:
            batch.watch(d)
            (d / "f").write_bytes(b"x" * 100)
        assert len(os.listdir("/proc/self/fd")) == before + 1
        batch.commit()
    assert len(os.listdir("/proc/self/fd")) == before


def _waves_or_skip(root):
    from pipeline.storage.chunkstore import SyncWaves, SyncBatch
    if not SyncBatch.available:
        pytest.skip("no syncfs on this platform: each small upload is fsynced on its own")
    return SyncWaves(root)


def test_concurrent_small_uploads_are_made_durable_by_shared_syncs(store, monkeypatch):
    """Small uploads that arrive together wait for one syncfs between them; each is answered only
    after a sync that began after its last write, and every one reads back byte-exact."""
    from concurrent.futures import ThreadPoolExecutor

    import pipeline.storage.chunkstore as chunkstore
    real, calls = chunkstore._syncfs, []

    def counted(fd):
        calls.append(fd)
        time.sleep(0.01)  # a slow disk: uploads arrive during each sync
        return real(fd)
    monkeypatch.setattr(chunkstore, "_syncfs", counted)
    bodies = [random_bytes(4096, 4500 + i) for i in range(24)]

    def upload(data):
        return store.receive("t1", "s.bin", None, [data], size_hint=len(data))
    with ThreadPoolExecutor(8) as pool:
        files = list(pool.map(upload, bodies))
    assert 0 < len(calls) < len(bodies)
    for f, data in zip(files, bodies):
        assert read_all(store, store.get_readable("t1", f.id)) == data


def test_a_failed_sync_fails_its_wave_and_every_write_begun_before_it(tmp_path, monkeypatch):
    import pipeline.storage.chunkstore as chunkstore
    waves = _waves_or_skip(tmp_path)
    early = waves.ticket()  # a write that began before the failure, answered by a later wave
    monkeypatch.setattr(chunkstore, "_syncfs", lambda fd: (ctypes_set_errno(5), -1)[1])
    with pytest.raises(OSError) as failed:
        waves.wait(waves.ticket())
    assert failed.value.errno == 5
    monkeypatch.undo()
    with pytest.raises(OSError):
        waves.wait(early)
    waves.wait(waves.ticket())  # a write begun after the failure: durable as usual


def ctypes_set_errno(value: int) -> None:
    import ctypes
    ctypes.set_errno(value)


def test_a_small_files_spool_directory_goes_with_its_ingest(store, settings):
    """A batch of small files leaves no spool directory, here or set aside in the trash."""
    files = [store.receive("t1", "s.bin", None, [random_bytes(4096, 4600 + i)], size_hint=4096) for i in range(5)]
    done, rest = store.ingest_many([f.id for f in files])
    assert sorted(done) == sorted(f.id for f in files) and rest == []
    assert not any(store.spool.exists(f.id) for f in files)
    trash = store.spool.trash
    assert not trash.exists() or not any(p.name.split(".")[0] in done for p in trash.iterdir())


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 65535, 65536, 65537, 524288, 1048576, 1048577, 3 * 1048576 + 5])
def test_a_chunk_file_reads_back_whole_whatever_its_size(tmp_path, size):
    """Around the page cache (O_DIRECT, whole blocks into an aligned buffer, a longer file into a
    buffer of its own) from 64 KiB up, through it below: the same bytes either way."""
    from pipeline.storage.chunkstore import read_whole

    data = random_bytes(size, 4690 + size % 97)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert read_whole(str(path), str(tmp_path)) == data
    assert read_whole(str(path), str(tmp_path)) == data  # the thread's buffer again


def test_a_one_chunk_upload_is_counted_under_way_until_its_record_is_written_and_a_larger_one_is_not(store):
    """The count the group commits' leaders wait on (pipeline.metadata.groupcommit.SMALL_UPLOADS):
    a body announced as one chunk, from its first byte until its file record is written, also when
    it fails; a longer one never."""
    from pipeline.metadata.groupcommit import SMALL_UPLOADS

    seen = []

    def watched(data):
        for piece in pieces(data):
            seen.append(SMALL_UPLOADS())
            yield piece

    small, large = random_bytes(CHUNK // 2, 4691), random_bytes(3 * CHUNK, 4692)
    f = store.receive("t1", "small.bin", None, watched(small), size_hint=len(small))
    assert set(seen) == {1} and SMALL_UPLOADS() == 0
    assert store.meta.files.get_file(f.id, "t1").size == len(small)  # the record it was counted for
    seen.clear()
    store.receive("t1", "large.bin", None, watched(large), size_hint=len(large))
    assert set(seen) == {0}

    def failing():
        yield b"x" * 100
        raise ConnectionResetError("the client went away")
    with pytest.raises(ConnectionResetError):
        store.receive("t1", "gone.bin", None, failing(), size_hint=CHUNK)
    assert SMALL_UPLOADS() == 0


def test_a_chunk_file_of_64_kib_or_more_is_read_around_the_page_cache(tmp_path, monkeypatch):
    """O_DIRECT on the open of a file of DIRECT_READ_MIN bytes or more, not on a shorter one's reads."""
    import pipeline.storage.chunkstore as chunkstore
    if not chunkstore._O_DIRECT:
        pytest.skip("no O_DIRECT on this platform")
    real_preadv, direct_reads = os.preadv, []

    def spying(fd, buffers, offset, *args):
        direct_reads.append(bool(chunkstore.fcntl.fcntl(fd, chunkstore.fcntl.F_GETFL) & chunkstore._O_DIRECT))
        return real_preadv(fd, buffers, offset, *args)
    monkeypatch.setattr(os, "preadv", spying)
    big, short = tmp_path / "big", tmp_path / "short"
    big.write_bytes(random_bytes(chunkstore.DIRECT_READ_MIN, 4693))
    short.write_bytes(random_bytes(chunkstore.DIRECT_READ_MIN - 1, 4694))
    assert chunkstore.read_whole(str(big), str(tmp_path)) == big.read_bytes()
    assert direct_reads and all(direct_reads)
    direct_reads.clear()
    assert chunkstore.read_whole(str(short), str(tmp_path)) == short.read_bytes()
    assert direct_reads == []  # read through the page cache, by the file object's own loop


def test_a_filesystem_that_opens_with_o_direct_but_refuses_its_reads_is_read_through_the_page_cache(
        tmp_path, monkeypatch):
    import errno

    import pipeline.storage.chunkstore as chunkstore
    if not chunkstore._O_DIRECT:
        pytest.skip("no O_DIRECT on this platform")
    data = random_bytes(3 * CHUNK // 2, 4695)
    path = tmp_path / "f"
    path.write_bytes(data)

    def refusing(*args, **kwargs):
        raise OSError(errno.EINVAL, "Invalid argument")
    monkeypatch.setattr(os, "preadv", refusing)
    try:
        assert chunkstore.read_whole(str(path), str(tmp_path)) == data
        assert str(tmp_path) in chunkstore._buffered_roots
        assert chunkstore.read_whole(str(path), str(tmp_path)) == data  # buffered from the first read on
    finally:
        chunkstore._buffered_roots.discard(str(tmp_path))


def test_a_filesystem_that_refuses_o_direct_gets_the_same_bytes_through_the_page_cache(store, monkeypatch):
    """tmpfs and some network filesystems refuse O_DIRECT (EINVAL): spool files and fragments are
    then written buffered, and read back byte-exact."""
    import errno

    import pipeline.storage.chunkstore as chunkstore
    if not chunkstore._O_DIRECT:
        pytest.skip("no O_DIRECT on this platform")
    real_open, refused = os.open, []

    def refusing(path, flags, *args, **kwargs):
        if flags & chunkstore._O_DIRECT:
            refused.append(str(path))
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        return real_open(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", refusing)
    data = random_bytes(3 * CHUNK + 4097, 4700)
    f = store.receive("t1", "b.bin", None, pieces(data))
    assert read_all(store, store.get_readable("t1", f.id)) == data  # from the spool
    assert store.ingest(f.id).status == "stored"
    monkeypatch.undo()
    roots = {str(store.spool.root), *(str(d) for d in store.chunks.node_dirs.values())}
    assert roots <= chunkstore._buffered_roots  # the spool and every node refused once, then wrote buffered
    chunkstore._buffered_roots.difference_update(roots)  # this store's only: no other test's
    assert refused and read_all(store, store.get_readable("t1", f.id)) == data  # from the nodes
