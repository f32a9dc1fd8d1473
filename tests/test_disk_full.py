"""Out of disk: an ENOSPC injected at the one place that writes (the spool writer; a node placement).

The answer is 507, nothing partial is kept, the file never stays queued, and other uploads work.
"""
from __future__ import annotations

import errno
import io
import os

import pytest

from app import create_app
from pipeline.datapath import chunking
from pipeline.datapath.ingest import NODE_FULL
from pipeline.metadata.model import parse_file_id
from tests.probes import fill_node
from tests.stack import random_bytes

CHUNK = 64 * 1024


@pytest.fixture
def client(settings, store):
    """Ingest runs in-process as soon as a file is queued (no broker)."""
    app = create_app(settings, store=store, enqueue=lambda file_id, request_id=None, **_: store.ingest(file_id))
    return app.test_client()


def upload(client, data: bytes, wait: bool = False):
    return client.post("/api/upload" + ("?wait=1" if wait else ""), data={"file": (io.BytesIO(data), "f.bin")},
                       content_type="multipart/form-data")


def everything_in(store) -> tuple[set, set, list]:
    """(file ids, file ids with manifest pages, spool directories)."""
    files = {f.id for f in store.meta.files.files_in_states(("queued", "processing", "stored", "failed"), 4e9)}
    return files, set(store.meta.files.manifest_file_ids()), sorted(d for d, _ in store.spool.entries())


class FullAfter:
    """The spool writer's ``write_new_file`` with ``budget`` bytes of room in all: the write that
    does not fit leaves what fits on disk, then fails with ENOSPC, as a full disk does."""

    def __init__(self, budget: int):
        self.left = budget
        self.real = chunking.write_new_file

    def __call__(self, path, pieces, size, direct=True):
        if size > self.left:
            fits = b"".join(bytes(p) for p in pieces)[:self.left]
            self.real(path, [fits], len(fits), direct)
            self.left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.left -= size
        return self.real(path, pieces, size, direct)


def test_spool_full_is_507_and_leaves_nothing_while_other_uploads_work(client, store, monkeypatch):
    before_data = random_bytes(3 * CHUNK + 5, 31)
    before = upload(client, before_data).get_json()["fileId"]
    snapshot = everything_in(store)
    monkeypatch.setattr(chunking, "write_new_file", FullAfter(2 * CHUNK + 100))
    r = upload(client, random_bytes(6 * CHUNK, 32))
    assert r.status_code == 507
    assert r.get_json()["success"] is False and r.get_json()["error"]["code"] == "insufficient_storage"
    assert everything_in(store) == snapshot  # no file, no manifest page, no spool directory
    monkeypatch.undo()
    after_data = random_bytes(5 * CHUNK + 1, 33)
    after = upload(client, after_data, wait=True)
    assert after.status_code == 201
    for file_id, data in ((before, before_data), (after.get_json()["fileId"], after_data)):
        assert client.get(f"/api/files/{file_id}").data == data


@pytest.fixture
def whole_client(settings, whole_store):
    app = create_app(whole_store.settings, store=whole_store,
                     enqueue=lambda file_id, request_id=None, **_: whole_store.ingest(file_id))
    return app.test_client()


def test_node_full_fails_the_file_with_a_reason_507_and_removes_its_spool(whole_client, whole_store, monkeypatch):
    # one whole copy per chunk (1+0): a chunk that its node cannot take has nowhere else to go
    client, store, settings = whole_client, whole_store, whole_store.settings
    stored_data = random_bytes(4 * CHUNK, 34)
    stored = upload(client, stored_data, wait=True).get_json()["fileId"]
    full_node = str(settings.nodes[1])
    fill_node(monkeypatch, full_node)
    data = random_bytes(6 * CHUNK, 35)  # six new chunks: round robin puts two on the full node
    r = upload(client, data, wait=True)
    assert r.status_code == 507
    body = r.get_json()
    assert body["error"]["code"] == "insufficient_storage" and full_node not in body["error"]["message"]
    failed_id = body["error"]["fileId"]
    status = client.get(f"/api/files/{failed_id}/status").get_json()
    assert status["status"] == "failed" and status["error"] == NODE_FULL
    stored_doc = store.meta.db.files.find_one({"_id": parse_file_id(failed_id)})
    assert stored_doc["errorCode"] == "insufficient_storage"  # the code a program compares, beside the text
    assert store.meta.files.get_file(failed_id).error_code == "insufficient_storage"
    assert not store.spool.exists(failed_id)  # partial data removed
    assert client.get(f"/api/files/{failed_id}").status_code == 409
    monkeypatch.undo()
    assert client.get(f"/api/files/{stored}").data == stored_data  # other files unaffected
    again = upload(client, data, wait=True)
    assert again.status_code == 201
    assert client.get(f"/api/files/{again.get_json()['fileId']}").data == data
