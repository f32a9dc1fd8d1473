"""Content-defined chunking (FastCDC) beside fixed-size chunks: dedup survives an edit."""
from __future__ import annotations

import dataclasses

import pytest

from pipeline.datapath.chunking import ContentDefinedWriter
from pipeline.store import ObjectStore
from tests.stack import random_bytes

MiB = 1 << 20


def make_store(settings, chunking: str) -> ObjectStore:
    s = ObjectStore.from_settings(dataclasses.replace(settings, chunking=chunking, chunk_size=MiB,
                                                      manifest_page_size=1000))
    s.prepare()
    s.placement.key = "rr:" + settings.mongo_db
    return s


def pieces(data: bytes, size: int = 256 * 1024):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def put(store: ObjectStore, data: bytes):
    f = store.receive("t1", "f.bin", None, pieces(data))
    report = store.ingest(f.id)
    assert report.status == "stored"
    assert b"".join(store.read(store.get_readable("t1", f.id))) == data
    return f, report


@pytest.fixture
def edited():
    data = random_bytes(64 * MiB, 64)
    return data, data[:5000] + b"0123456789" * 10 + data[5000:]


def test_fastcdc_deduplicates_a_file_with_bytes_inserted_near_its_start(store, settings, edited):
    cdc = make_store(settings, "fastcdc")
    original, changed = edited
    f1, first = put(cdc, original)
    f2, second = put(cdc, changed)
    assert second.deduplicated / second.chunks >= 0.9, (second.deduplicated, second.chunks)
    sizes = [n for page in cdc.meta.files.iter_manifest(f1.id) for n in page.sizes]
    assert sum(sizes) == len(original)
    assert all(ContentDefinedWriter.MIN <= n <= ContentDefinedWriter.MAX for n in sizes[:-1])
    assert cdc.meta.files.get_file(f2.id) is not None
    stats = cdc.meta.operations.stats()
    assert stats["logicalBytes"] == len(original) + len(changed)


def test_fixed_chunks_deduplicate_almost_nothing_of_the_same_edit(store, settings, edited):
    fixed = make_store(settings, "fixed")
    original, changed = edited
    put(fixed, original)
    _, second = put(fixed, changed)
    assert second.deduplicated / second.chunks < 0.1


def test_both_kinds_of_chunk_deduplicate_where_bytes_agree(store, settings):
    small = random_bytes(100 * 1024, 5)  # under FastCDC's minimum: one chunk either way
    _, first = put(make_store(settings, "fixed"), small)
    _, second = put(make_store(settings, "fastcdc"), small)
    assert (first.new_chunks, second.new_chunks, second.deduplicated) == (1, 0, 1)


def test_range_reads_of_variable_size_chunks(store, settings):
    cdc = make_store(settings, "fastcdc")
    data = random_bytes(12 * MiB + 17, 6)
    f, _ = put(cdc, data)
    f = cdc.get_readable("t1", f.id)
    for start, stop in [(0, 1), (MiB - 1, 3 * MiB + 1), (len(data) - 5, len(data)), (4 * MiB, 11 * MiB)]:
        assert b"".join(cdc.read(f, start, stop)) == data[start:stop]


@pytest.mark.parametrize("hint", [None, 100, 5000])
def test_a_small_body_is_hashed_in_the_callers_thread_with_the_same_result(tmp_path, hint):
    """A size hint of one chunk hashes without threads; a body longer than its hint (a hint is not
    trusted) still comes out whole and right."""
    import hashlib
    import threading

    from pipeline.datapath.chunking import ChunkingWriter

    data = random_bytes(3000 if hint != 100 else 9000, 7)
    records = []
    directory = tmp_path / "up"
    directory.mkdir()
    before = threading.active_count()
    writer = ChunkingWriter(directory, lambda i: directory / f"{i:08d}", 4096, records.append, md5=True,
                            size_hint=hint)
    threads_while_writing = threading.active_count() - before
    for piece in pieces(data, 1000):
        writer.write(piece)
    result = writer.finish()
    assert threads_while_writing == (0 if hint is not None and hint <= 4096 else 3)
    assert (result.size, result.sha256, result.md5) == (len(data), hashlib.sha256(data).hexdigest(),
                                                        hashlib.md5(data).hexdigest())
    chunks = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    assert [r.sha256 for r in records] == [hashlib.sha256(c).hexdigest() for c in chunks]
    assert [(directory / f"{i:08d}").read_bytes() for i in range(len(chunks))] == chunks
