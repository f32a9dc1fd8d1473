"""The HTTP contract through Flask's test client; ingest runs in-process (no broker)."""
from __future__ import annotations

import hashlib
import io

import pytest

from app import create_app
from tests.stack import random_bytes

CHUNK = 64 * 1024


@pytest.fixture
def queue():
    return []


@pytest.fixture
def client(settings, store, queue):
    app = create_app(settings, store=store, enqueue=lambda file_id, request_id=None, **_: queue.append(file_id))
    return app.test_client()


def upload(client, data: bytes, name: str = "a.bin", wait: bool = False):
    return client.post("/api/upload" + ("?wait=1" if wait else ""),
                       data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def test_upload_answers_202_and_queues_the_file_id(client, queue, store):
    data = random_bytes(3 * CHUNK + 1, 1)
    r = upload(client, data)
    assert r.status_code == 202
    body = r.get_json()
    assert body["success"] is True and body["status"] == "queued"
    assert queue == [body["fileId"]]
    doc = store.meta.db.files.find_one({"sha256": hashlib.sha256(data).hexdigest()})
    assert str(doc["_id"]) == body["fileId"] and doc["status"] == "queued" and doc["size"] == len(data)
    assert r.headers["X-Request-ID"]


def test_download_before_ingest_reads_from_the_spool(client, queue, store):
    data = random_bytes(3 * CHUNK + 5, 1)
    file_id = upload(client, data).get_json()["fileId"]
    assert client.get(f"/api/files/{file_id}/status").get_json()["status"] == "queued"
    r = client.get(f"/api/files/{file_id}")
    assert r.status_code == 200 and r.data == data
    r = client.get(f"/api/files/{file_id}", headers={"Range": f"bytes={CHUNK - 2}-{2 * CHUNK + 1}"})
    assert r.status_code == 206 and r.data == data[CHUNK - 2:2 * CHUNK + 2]
    assert client.get(f"/api/files/{file_id}/status").get_json()["status"] == "queued"


def test_download_of_a_failed_file_is_409_with_the_status(client, queue, store):
    file_id = upload(client, b"hello").get_json()["fileId"]
    store.meta.files.mark_failed(file_id, "lost")
    r = client.get(f"/api/files/{file_id}")
    assert r.status_code == 409
    assert r.get_json()["error"]["code"] == "not_ready"
    assert r.get_json()["error"]["status"] == "failed"


def test_status_shows_progress_after_ingest(client, queue, store):
    data = random_bytes(5 * CHUNK, 2)
    file_id = upload(client, data).get_json()["fileId"]
    assert client.get(f"/api/files/{file_id}/status").get_json()["status"] == "queued"
    store.ingest(queue.pop())
    status = client.get(f"/api/files/{file_id}/status").get_json()
    assert status == {"fileId": file_id, "status": "stored", "error": None,
                      "progress": {"chunksDone": 5, "chunksTotal": 5}}
    r = client.get(f"/api/files/{file_id}")
    assert r.status_code == 200 and r.data == data


@pytest.mark.parametrize("bad", ["abc", "0" * 23, "0" * 25, "zz" * 12, "9" * 5000])
def test_malformed_id_is_400(client, bad):
    for path in (f"/api/files/{bad}", f"/api/files/{bad}/status"):
        r = client.get(path)
        assert r.status_code == 400, path
        assert r.get_json()["error"]["code"] == "invalid_id"


def test_unknown_id_is_404(client):
    r = client.get("/api/files/" + "a" * 24)
    assert r.status_code == 404
    assert r.get_json() == {"success": False, "error": {"code": "not_found", "message": "No such file."}}


def test_by_hash_rejects_a_non_hash_and_misses_cleanly(client):
    assert client.get("/api/files/by-hash/xyz").status_code == 400
    assert client.get("/api/files/by-hash/" + "0" * 64).status_code == 404


def test_content_disposition_carries_rfc5987_name(client, queue, store):
    file_id = upload(client, b"data", name="../../ünïcode 文件.txt").get_json()["fileId"]
    store.ingest(queue.pop())
    cd = client.get(f"/api/files/{file_id}").headers["Content-Disposition"]
    assert cd == ("attachment; filename=\"_n_code __.txt\"; "
                  "filename*=UTF-8''%C3%BCn%C3%AFcode%20%E6%96%87%E4%BB%B6.txt")


def test_empty_file_downloads_empty(client, queue, store):
    file_id = upload(client, b"").get_json()["fileId"]
    store.ingest(queue.pop())
    r = client.get(f"/api/files/{file_id}")
    assert r.status_code == 200 and r.data == b"" and r.headers["Content-Length"] == "0"


def test_if_none_match_with_the_etag_is_304(client, queue, store):
    file_id = upload(client, b"cached").get_json()["fileId"]
    store.ingest(queue.pop())
    etag = client.get(f"/api/files/{file_id}").headers["ETag"]
    assert client.get(f"/api/files/{file_id}", headers={"If-None-Match": etag}).status_code == 304


def test_list_pages_newest_first_with_a_cursor(client, queue):
    ids = [upload(client, f"file {i}".encode()).get_json()["fileId"] for i in range(5)]
    seen = []
    cursor = None
    while True:
        r = client.get("/api/files?limit=2" + (f"&cursor={cursor}" if cursor else "")).get_json()
        seen += [f["fileId"] for f in r["files"]]
        cursor = r["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "limit=100000", "cursor=nothex"])
def test_bad_list_parameters_are_400(client, query):
    assert client.get(f"/api/files?{query}").status_code == 400


def test_every_domain_error_has_an_api_status_from_the_one_table():
    import inspect

    from app.errors import api_status
    import pipeline.errors as domain

    internal = {"internal_error", "chunk_unavailable", "server_secret"}
    for _, cls in inspect.getmembers(domain, inspect.isclass):
        if not issubclass(cls, domain.StoreError):
            continue
        exc = cls("c" * 64, "node-1", "gone") if cls is domain.ChunkUnavailable else cls("x")
        status = api_status(exc)
        assert (status == 500) == (cls.code in internal), cls
        assert 400 <= status < 600


@pytest.mark.parametrize("query, status, code", [
    ("?bucket=nosuch&key=k", 404, "no_such_bucket"),
    ("?bucket=theirs&key=k", 403, "forbidden"),
    ("?bucket=mine&key=" + "x" * 1025, 400, "key_too_long"),
    ("?bucket=mine", 400, "bad_request"),
])
def test_upload_under_a_name_that_cannot_be_given_is_refused_and_keeps_nothing(client, store, settings, query,
                                                                               status, code):
    names = store.object_names()
    names.create_bucket("default", "mine")
    names.create_bucket("other", "theirs")
    r = client.post("/api/upload" + query, data={"file": (io.BytesIO(b"x" * 1000), "a.bin")},
                    content_type="multipart/form-data")
    assert (r.status_code, r.get_json()["error"]["code"]) == (status, code)
    assert store.meta.db.files.count_documents({}) == 0
    assert list(settings.spool_dir.iterdir()) == []


def test_upload_under_a_name_is_an_s3_object_with_its_md5(client, store, queue):
    names = store.object_names()
    names.create_bucket("default", "mine")
    data = random_bytes(3 * CHUNK + 1, 77)
    r = client.post("/api/upload?bucket=mine&key=dir/a.bin", data={"file": (io.BytesIO(data), "a.bin")},
                    content_type="multipart/form-data")
    assert r.status_code == 202
    info = names.head("default", "mine", "dir/a.bin")
    assert info.file_id == r.get_json()["fileId"] and info.etag == hashlib.md5(data).hexdigest()
    assert b"".join(names.read(info)) == data
    listed = client.get("/api/files").get_json()["files"]
    assert [(f["bucket"], f["key"]) for f in listed] == [("mine", "dir/a.bin")]
    assert client.delete(f"/api/files/{info.file_id}").status_code == 204
    with pytest.raises(Exception):
        names.head("default", "mine", "dir/a.bin")
