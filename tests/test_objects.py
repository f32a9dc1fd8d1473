"""Names over contents: buckets, objects, copies and multipart composition, on the domain alone
(real nx-27017 and Redis, no HTTP)."""
from __future__ import annotations

import hashlib

import pytest

from pipeline.errors import (BucketExists, BucketNotEmpty, EntityTooSmall, Forbidden, InvalidPart,
                             InvalidPartOrder, NoSuchBucket, NoSuchKey, NoSuchUpload, PreconditionFailed,
                             ServiceUnavailable)
from pipeline.metadata.model import DELETED, STORED
from pipeline.namespace.objects import MIN_PART_SIZE, ObjectAttributes
from pipeline.storage.chunkstore import parse_name
from tests.stack import random_bytes

CHUNK = 64 * 1024  # the store fixture's chunk size


def pieces(data: bytes, size: int = 10_000):
    for i in range(0, len(data), size):
        yield data[i:i + size]


@pytest.fixture
def names(store):
    n = store.object_names()
    n.create_bucket("t1", "photos")
    return n


def read_all(names, info, start=0, stop=None) -> bytes:
    return b"".join(names.read(info, start, stop))


def chunk_files(settings) -> set[str]:
    return {p.name for n in settings.nodes for p in n.rglob("*") if p.is_file() and len(p.name) == 64}


def node_files(settings) -> list[str]:
    """Names of the chunk files (whole copies and fragments) on every node."""
    return sorted(p.name for n in settings.nodes for p in n.rglob("*") if p.is_file() and parse_name(p.name))


def test_bucket_names_are_global_and_owned_by_one_tenant(names):
    bucket, created = names.create_bucket("t1", "photos")
    assert not created and bucket.tenant == "t1"  # the owner again: its bucket back, as AWS us-east-1
    with pytest.raises(BucketExists):
        names.create_bucket("t2", "photos")
    with pytest.raises(Forbidden):
        names.head("t2", "photos", "a")
    with pytest.raises(NoSuchBucket):
        names.head("t1", "nothing-here", "a")
    assert [b.name for b in names.list_buckets("t1")] == ["photos"]
    assert names.list_buckets("t2") == []


def test_put_is_readable_before_ingest_and_after(names, store):
    data = random_bytes(3 * CHUNK + 11, 1)
    info, f = names.put("t1", "photos", "a/b.bin", pieces(data), ObjectAttributes("image/png", {"k": "v"}))
    assert info.etag == hashlib.md5(data).hexdigest() and info.size == len(data)
    assert store.meta.files.get_file(f.id).status == "queued"
    assert read_all(names, names.head("t1", "photos", "a/b.bin")) == data
    assert read_all(names, info, CHUNK - 3, 2 * CHUNK + 5) == data[CHUNK - 3:2 * CHUNK + 5]
    assert store.ingest(f.id).status == STORED
    head = names.head("t1", "photos", "a/b.bin")
    assert (head.content_type, head.metadata) == ("image/png", {"k": "v"})
    assert read_all(names, head) == data


def test_read_survives_ingest_moving_the_chunk_mid_read(names, store):
    data = random_bytes(4 * CHUNK, 2)
    info, f = names.put("t1", "photos", "k", pieces(data), ObjectAttributes())
    reader = names.read(info)
    first = next(reader)  # chunk 0 came from the spool
    assert store.ingest(f.id).status == STORED  # every later chunk has left the spool meanwhile
    assert not store.spool.chunk_path(f.id, 1).exists()
    assert first + b"".join(reader) == data


def test_overwrite_points_the_name_at_the_new_file_and_deletes_the_old(names, store):
    old, f_old = names.put("t1", "photos", "k", pieces(b"old bytes"), ObjectAttributes())
    new, f_new = names.put("t1", "photos", "k", pieces(b"new bytes!"), ObjectAttributes())
    assert store.meta.files.get_file(f_old.id).status == DELETED
    assert list(store.meta.files.iter_manifest(f_old.id)) == []
    assert read_all(names, names.head("t1", "photos", "k")) == b"new bytes!"
    with pytest.raises(PreconditionFailed):
        names.put("t1", "photos", "k", pieces(b"third"), ObjectAttributes(), if_none_match=True)
    assert read_all(names, names.head("t1", "photos", "k")) == b"new bytes!"


def test_delete_removes_the_name_and_the_file_and_api_delete_removes_the_name(names, store):
    _, f = names.put("t1", "photos", "k", pieces(b"x" * 100), ObjectAttributes())
    assert names.delete("t1", "photos", "k") is True
    assert store.meta.files.get_file(f.id).status == DELETED
    with pytest.raises(NoSuchKey):
        names.head("t1", "photos", "k")
    assert names.delete("t1", "photos", "k") is False  # S3 answers 204 all the same
    _, f2 = names.put("t1", "photos", "k2", pieces(b"y" * 100), ObjectAttributes())
    store.delete("t1", f2.id)  # through /api
    with pytest.raises(NoSuchKey):
        names.head("t1", "photos", "k2")


def test_bucket_with_objects_is_not_deleted(names):
    names.put("t1", "photos", "k", pieces(b"x"), ObjectAttributes())
    with pytest.raises(BucketNotEmpty):
        names.delete_bucket("t1", "photos")
    names.delete("t1", "photos", "k")
    names.delete_bucket("t1", "photos")
    assert names.list_buckets("t1") == []


def test_copy_moves_no_data_byte_and_survives_deleting_the_source(names, store, settings):
    data = random_bytes(5 * CHUNK, 3)
    _, f = names.put("t1", "photos", "src", pieces(data), ObjectAttributes("text/plain", {"a": "1"}))
    store.ingest(f.id)
    before = chunk_files(settings)
    copy = names.copy("t1", "photos", "src", "photos", "dst", None)
    assert chunk_files(settings) == before
    assert (copy.etag, copy.content_type, copy.metadata) == (hashlib.md5(data).hexdigest(), "text/plain", {"a": "1"})
    names.delete("t1", "photos", "src")
    assert read_all(names, names.head("t1", "photos", "dst")) == data
    onto_itself = names.copy("t1", "photos", "dst", "photos", "dst", ObjectAttributes("text/csv", {"b": "2"}))
    assert onto_itself.metadata == {"b": "2"}
    assert read_all(names, names.head("t1", "photos", "dst")) == data


def test_listing_is_in_byte_order_with_prefixes_and_pages(names):
    keys = ["a b", "a%", "a+", "a/1", "a/2", "a/x/3", "a0", "b", "é", "中", "~"]
    for k in keys:
        names.put("t1", "photos", k, pieces(b"."), ObjectAttributes())
    assert [o.key for o in names.list("t1", "photos").objects] == sorted(keys, key=lambda k: k.encode())
    listing = names.list("t1", "photos", prefix="a/", delimiter="/")
    assert ([o.key for o in listing.objects], listing.prefixes) == (["a/1", "a/2"], ["a/x/"])
    listing = names.list("t1", "photos", delimiter="/")
    assert listing.prefixes == ["a/"] and "a/1" not in [o.key for o in listing.objects]
    seen, after = [], None
    while True:
        page = names.list("t1", "photos", delimiter="/", after=after, max_keys=3)
        seen += [o.key for o in page.objects] + page.prefixes
        if not page.truncated:
            break
        after = page.next_marker
    expected = sorted([k for k in keys if not k.startswith("a/")] + ["a/"], key=lambda k: k.encode())
    assert sorted(seen, key=lambda k: k.encode()) == expected and len(seen) == len(expected)
    assert names.list("t1", "photos", prefix="zzz").objects == []


def test_multipart_completion_concatenates_manifests_without_moving_bytes(names, store, settings):
    parts = [random_bytes(MIN_PART_SIZE + 7, 10), random_bytes(MIN_PART_SIZE + CHUNK // 2, 11), b"tail"]
    upload = names.create_upload("t1", "photos", "big", ObjectAttributes("video/mp4", {"m": "1"}))
    etags, part_files = [], []
    for number, data in zip((1, 3, 7), parts):
        part, f = names.put_part("t1", "photos", "big", upload.upload_id, number, pieces(data, 1 << 20))
        etags.append((number, part.etag))
        part_files.append(f.id)
        store.ingest(f.id)
    before = chunk_files(settings)
    info = names.complete("t1", "photos", "big", upload.upload_id, etags)
    assert chunk_files(settings) == before
    expected_etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-3"
    assert info.etag == expected_etag and info.size == sum(map(len, parts))
    whole = b"".join(parts)
    assert read_all(names, info) == whole
    assert read_all(names, info, MIN_PART_SIZE, MIN_PART_SIZE + 20) == whole[MIN_PART_SIZE:MIN_PART_SIZE + 20]
    # across each part's end (its short last chunk), found by the pages' byte offsets
    for end in (len(parts[0]), len(parts[0]) + len(parts[1])):
        for a, b in ((end - 5, end + 3), (end - CHUNK - 1, end + 1), (end, end + 2)):
            assert read_all(names, info, a, b) == whole[a:b]
    assert store.meta.files.get_file(info.file_id).status == STORED
    # a repeated completion answers the same; the parts are gone
    assert names.complete("t1", "photos", "big", upload.upload_id, etags).etag == expected_etag
    with pytest.raises(NoSuchUpload):
        names.put_part("t1", "photos", "big", upload.upload_id, 9, pieces(b"late"))
    # the parts' files are deleted and their manifests released; the object's names every chunk
    assert set(store.meta.files.file_states(part_files).values()) == {"deleted"}
    assert store.meta.db.manifests.count_documents({"file": {"$in": part_files}}) == 0
    assert read_all(names, names.head("t1", "photos", "big")) == whole


def test_completion_ingests_parts_no_worker_has_ingested_yet(names, store):
    upload = names.create_upload("t1", "photos", "k", ObjectAttributes())
    part, _ = names.put_part("t1", "photos", "k", upload.upload_id, 1, pieces(b"only part"))
    info = names.complete("t1", "photos", "k", upload.upload_id, [(1, f'"{part.etag}"')])
    assert read_all(names, info) == b"only part"
    assert store.meta.files.get_file(info.file_id).status == STORED


def test_completion_links_spooled_parts_into_one_file_ingested_once(store, settings):
    queued = []
    names = store.object_names(enqueue=queued.append)
    names.create_bucket("t1", "photos")
    parts = [random_bytes(MIN_PART_SIZE + 5, 20), random_bytes(MIN_PART_SIZE + 9, 21), b"end"]
    upload = names.create_upload("t1", "photos", "big", ObjectAttributes())
    etags, files = [], []
    for number, data in enumerate(parts, 1):
        part, f = names.put_part("t1", "photos", "big", upload.upload_id, number, pieces(data, 1 << 20))
        assert f.sha256 is None and store.meta.files.get_file(f.id).status == "queued"  # queued, not ingested here
        etags.append((number, part.etag))
        files.append(f)
    assert store.ingest(files[0].id).status == STORED  # one part a sweep ingested on its own
    spooled = store.spool.chunk_path(files[1].id, 0).stat().st_ino
    before = node_files(settings)
    assert before  # the first part's chunks
    info = names.complete("t1", "photos", "big", upload.upload_id, etags)
    # each part was queued as it arrived, then the object
    assert [f.id for f in queued] == [f.id for f in files] + [info.file_id] and queued[-1].status == "queued"
    assert node_files(settings) == before  # nothing written to the nodes yet
    # the later parts' spooled chunks are the object's own spool entries: the same inodes, no copy
    first_linked = files[0].chunk_count
    assert store.spool.chunk_path(info.file_id, first_linked).stat().st_ino == spooled
    whole = b"".join(parts)
    assert read_all(names, info) == whole  # readable before its ingest: spool and nodes together
    assert store.ingest(info.file_id).status == STORED
    assert read_all(names, info) == whole
    assert not store.spool.exists(info.file_id)
    assert all(store.meta.files.get_file(f.id).status == DELETED for f in files)
    distinct = {h for p in store.meta.files.iter_manifest(info.file_id) for h in p.hashes}
    on_nodes = node_files(settings)
    k, m = store.chunkio.ec
    assert {parse_name(name)[0] for name in on_nodes} == distinct and len(on_nodes) == len(distinct) * (k + m)


def test_completion_with_a_part_whose_spool_left_meanwhile(store, settings):
    names = store.object_names(enqueue=lambda f: None)
    names.create_bucket("t1", "photos")
    upload = names.create_upload("t1", "photos", "k", ObjectAttributes())
    _, stale = names.put_part("t1", "photos", "k", upload.upload_id, 1, pieces(random_bytes(3 * CHUNK, 22)))
    # its ingest ran between the completion's read of the part and its links: the links find nothing
    assert store.ingest(stale.id).status == STORED
    f = store.compose("t1", "k", None, [stale], None, None)
    assert store.ingest(f.id).status == STORED
    assert b"".join(store.read(store.meta.files.get_file(f.id))) == random_bytes(3 * CHUNK, 22)
    # a part whose spool was lost cannot be composed: the completion fails and leaves nothing
    _, lost = names.put_part("t1", "photos", "k", upload.upload_id, 2, pieces(b"lost bytes"))
    store.spool.remove(lost.id)
    with pytest.raises(ServiceUnavailable):
        store.compose("t1", "k2", None, [lost], None, None)
    assert [d for d, _ in store.spool.entries() if d not in (stale.id, lost.id)] == []


def test_completion_refuses_bad_part_lists(names):
    upload = names.create_upload("t1", "photos", "k", ObjectAttributes())
    small, _ = names.put_part("t1", "photos", "k", upload.upload_id, 1, pieces(b"small"))
    last, _ = names.put_part("t1", "photos", "k", upload.upload_id, 2, pieces(b"last"))
    with pytest.raises(EntityTooSmall):
        names.complete("t1", "photos", "k", upload.upload_id, [(1, small.etag), (2, last.etag)])
    with pytest.raises(InvalidPartOrder):
        names.complete("t1", "photos", "k", upload.upload_id, [(2, last.etag), (1, small.etag)])
    with pytest.raises(InvalidPart):
        names.complete("t1", "photos", "k", upload.upload_id, [(1, "0" * 32)])
    with pytest.raises(InvalidPart):
        names.complete("t1", "photos", "k", upload.upload_id, [(5, small.etag)])


def test_abort_deletes_the_parts_and_a_replaced_part_is_deleted(names, store):
    upload = names.create_upload("t1", "photos", "k", ObjectAttributes())
    first, f1 = names.put_part("t1", "photos", "k", upload.upload_id, 1, pieces(b"one"))
    second, f2 = names.put_part("t1", "photos", "k", upload.upload_id, 1, pieces(b"uno"))
    assert store.meta.files.get_file(f1.id).status == DELETED
    assert [p.etag for p in names.parts(upload)] == [second.etag]
    names.abort("t1", "photos", "k", upload.upload_id)
    assert store.meta.files.get_file(f2.id).status == DELETED
    with pytest.raises(NoSuchUpload):
        names.upload("t1", "photos", "k", upload.upload_id)


def test_abandoned_uploads_are_aborted(names, store):
    upload = names.create_upload("t1", "photos", "k", ObjectAttributes())
    _, f = names.put_part("t1", "photos", "k", upload.upload_id, 1, pieces(b"one"))
    assert names.abort_abandoned(3600) == 0
    assert names.abort_abandoned(3600, now=upload.created + 7200) == 1
    assert store.meta.files.get_file(f.id).status == DELETED


def test_part_files_are_not_listed_in_the_api(names, store):
    upload = names.create_upload("t1", "photos", "k", ObjectAttributes())
    names.put_part("t1", "photos", "k", upload.upload_id, 1, pieces(b"one"))
    _, f = names.put("t1", "photos", "named", pieces(b"n"), ObjectAttributes())
    files, _ = store.list("t1", 10, None)
    assert [(x.id, x.bucket, x.key) for x in files] == [(f.id, "photos", "named")]


def test_names_are_checked_as_aws_checks_them(names):
    from pipeline.errors import InvalidBucketName, KeyTooLong

    for bad in ("ab", "Upper", "a..b", "192.168.1.1", "-start", "x" * 64):
        with pytest.raises(InvalidBucketName):
            names.create_bucket("t1", bad)
    with pytest.raises(KeyTooLong):
        names.put("t1", "photos", "é" * 513, pieces(b"x"), ObjectAttributes())
    info, _ = names.put("t1", "photos", "é" * 512, pieces(b"x"), ObjectAttributes())  # 1024 bytes: fine
    assert names.head("t1", "photos", info.key).size == 1


def test_completion_on_a_spool_without_hard_links_ingests_the_parts_instead(store, monkeypatch):
    import errno
    import os

    from pipeline.storage import chunkstore

    def no_links(src, dst, *a, **kw):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM), str(src))

    names = store.object_names(enqueue=lambda f: None)
    names.create_bucket("t1", "photos")
    upload = names.create_upload("t1", "photos", "k", ObjectAttributes())
    data = random_bytes(3 * CHUNK + 1, 23)
    part, f = names.put_part("t1", "photos", "k", upload.upload_id, 1, pieces(data))
    monkeypatch.setattr(chunkstore.os, "link", no_links)
    info = names.complete("t1", "photos", "k", upload.upload_id, [(1, part.etag)])
    monkeypatch.undo()
    assert store.meta.files.get_file(f.id).status == DELETED  # ingested at completion, then released
    assert read_all(names, info) == data
    assert store.ingest(info.file_id).status == STORED and read_all(names, info) == data


def test_parts_ingested_as_they_arrive_make_the_completed_object_stored_at_once(store, settings):
    """With a queue, each part is queued for ingest when it arrives; once its worker has run, the
    completion composes stored parts into an object that is stored at once, byte-exact."""
    names = store.object_names(enqueue=lambda f: store.ingest(f.id))
    names.create_bucket("t1", "photos")
    parts = [random_bytes(MIN_PART_SIZE + 3, 22), random_bytes(MIN_PART_SIZE + 1, 23), b"tail"]
    upload = names.create_upload("t1", "photos", "piped", ObjectAttributes())
    etags = []
    for number, data in enumerate(parts, 1):
        part, f = names.put_part("t1", "photos", "piped", upload.upload_id, number, pieces(data, 1 << 20))
        assert store.meta.files.get_file(f.id).status == STORED
        etags.append((number, part.etag))
    info = names.complete("t1", "photos", "piped", upload.upload_id, etags)
    assert store.meta.files.get_file(info.file_id).status == STORED
    assert read_all(names, info) == b"".join(parts)
