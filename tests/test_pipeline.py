"""The pipeline alone (no Flask, no Celery) against a real Redis and nx-27017."""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from pipeline.chunkio import nodes_of
from pipeline.ingest import IngestReport
from pipeline.errors import ChunkUnavailable, RangeNotSatisfiable
from pipeline.upload import display_name
from tests.stack import random_bytes

CHUNK = 64 * 1024


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
    return [p for n in settings.nodes for p in Path(n).rglob("*") if p.is_file() and len(p.name) == 64]


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
    pages = list(store.repo.iter_manifest(f.id))
    assert [len(p.hashes) for p in pages] == [4, 4, 2]
    assert read_all(store, f, 5 * CHUNK - 3, 9 * CHUNK + 5) == data[5 * CHUNK - 3: 9 * CHUNK + 5]


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
    assert len(chunk_files(settings)) == 1
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
    first_page = next(store.repo.iter_manifest(f.id))
    # a worker died after placing the first page's chunks, before marking anything stored
    store.ingestor._ingest_page(store.repo.get_file(f.id), first_page, IngestReport(f.id, "queued"))
    assert store.repo.get_file(f.id).status == "queued"
    assert store.ingest(f.id).status == "stored"
    assert len(chunk_files(settings)) == 9
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
    assert len(chunk_files(settings)) == 8
    assert store.repo.chunks.count_documents({}) == 8
    for i in ids:
        assert read_all(store, store.get_readable("t1", i)) == data


def test_round_robin_spreads_new_chunks_evenly(store, settings):
    put(store, random_bytes(30 * CHUNK, 8))
    per_node = [len([p for p in Path(n).rglob("*") if p.is_file()]) for n in settings.nodes]
    assert per_node == [10, 10, 10]


def test_corrupt_chunk_aborts_read_and_names_the_chunk(store, settings, caplog):
    data = random_bytes(3 * CHUNK, 9)
    f = put(store, data)
    page = next(store.repo.iter_manifest(f.id))
    victim = page.hashes[1]
    doc = store.repo.chunk_docs([victim])[victim]
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


def test_missing_chunk_aborts_read(store):
    f = put(store, random_bytes(2 * CHUNK, 10))
    h = next(store.repo.iter_manifest(f.id)).hashes[0]
    node = nodes_of(store.repo.chunk_docs([h])[h])[0]
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
    assert store.repo.manifests.count_documents({}) == 0
    assert store.repo.files.count_documents({}) == 0


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
