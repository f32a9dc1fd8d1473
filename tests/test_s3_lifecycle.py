"""S3 objects through the store's life cycle: deduplication across keys, tenants, multipart uploads
and copies; GC giving the space back; abandoned multipart uploads aborted by beat."""
from __future__ import annotations

import hashlib
import time

import pytest

from pipeline.storage.erasure import Codec
from pipeline.store import ObjectStore
from tests.s3clients import boto3_client
from tests.stack import MiB, Stack, random_chunks, wait_for


def chunk_bytes(stack) -> int:
    return sum(stack.chunk_files().values())


def open_store(stack) -> ObjectStore:
    store = ObjectStore.from_settings(stack.settings)
    store.prepare()
    return store


def test_same_50_mib_under_many_keys_tenants_multipart_and_copy_is_stored_once_and_gc_empties_the_nodes(
        s3_stack, tmp_path):
    size = 50 * MiB
    source = tmp_path / "fifty.bin"
    with open(source, "wb") as f:
        for block in random_chunks(size, seed=5050):
            f.write(block)
    source_sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    acme = boto3_client(s3_stack, s3_stack.s3_credentials("acme"))
    globex = boto3_client(s3_stack, s3_stack.s3_credentials("globex"))
    acme.create_bucket(Bucket="acme-dedup")
    globex.create_bucket(Bucket="globex-dedup")
    for client, bucket in ((acme, "acme-dedup"), (globex, "globex-dedup")):
        for i in range(5):
            with open(source, "rb") as body:
                client.put_object(Bucket=bucket, Key=f"copy-{i}.bin", Body=body)
    acme.upload_file(str(source), "acme-dedup", "multipart.bin")  # 8 MiB parts: 7 of them
    assert acme.head_object(Bucket="acme-dedup", Key="multipart.bin")["ETag"].endswith('-7"')
    acme.copy_object(Bucket="acme-dedup", Key="copied.bin", CopySource="acme-dedup/copy-0.bin")
    store = open_store(s3_stack)
    try:
        wait_for(lambda: store.meta.db.files.count_documents({"status": {"$in": ["queued", "processing"]}}) == 0,
                 timeout=180, what="every upload ingested")
        # the space of one copy: 50 chunks of 1 MiB, each in the store's layout (k+m fragments) once
        k, m = s3_stack.settings.ec_layout
        assert chunk_bytes(s3_stack) == 50 * (k + m) * Codec(k, m).fragment_size(MiB)
        assert len(s3_stack.chunk_files()) == 50 * (k + m)
        for client, bucket, keys in ((acme, "acme-dedup", [f"copy-{i}.bin" for i in range(5)] +
                                      ["multipart.bin", "copied.bin"]),
                                     (globex, "globex-dedup", [f"copy-{i}.bin" for i in range(5)])):
            for key in keys:  # every name reads back the source's bytes from the one stored copy
                body = client.get_object(Bucket=bucket, Key=key)["Body"]
                digest = hashlib.sha256()
                for piece in iter(lambda: body.read(MiB), b""):
                    digest.update(piece)
                assert digest.hexdigest() == source_sha256, (bucket, key)
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
            client.delete_bucket(Bucket=bucket)
        report = store.garbage_collector().collect(now=time.time() + store.settings.gc_grace_s + 1)
        assert report["chunks"] == 50
        assert s3_stack.chunk_files() == {}
    finally:
        store.meta.client.close()


@pytest.fixture
def beat_stack(tmp_path, backends):
    s = Stack(tmp_path / "beat", backends, s3=True, beat=True, multipart_abandon_s=2.0)
    yield s
    s.stop()


def test_beat_aborts_an_abandoned_multipart_upload_and_its_parts(beat_stack):
    s3 = boto3_client(beat_stack, beat_stack.s3_credentials("acme"))
    s3.create_bucket(Bucket="slow")
    uid = s3.create_multipart_upload(Bucket="slow", Key="never-finished")["UploadId"]
    s3.upload_part(Bucket="slow", Key="never-finished", UploadId=uid, PartNumber=1, Body=b"p" * 1000)
    store = open_store(beat_stack)
    try:
        part_file = store.meta.db.parts.find_one({"upload": uid})["file"]
        wait_for(lambda: not s3.list_multipart_uploads(Bucket="slow").get("Uploads"), timeout=60,
                 what="the upload aborted by beat")
        # the abort drops the upload's record first, then its parts: wait for the end of it
        wait_for(lambda: store.meta.files.get_file(part_file).status == "deleted", timeout=30,
                 what="the part's file deleted by the abort")
        wait_for(lambda: store.meta.db.parts.count_documents({"upload": uid}) == 0, timeout=30,
                 what="the part records removed by the abort")
    finally:
        store.meta.client.close()
