"""Read-after-write through S3: a PUT that answered 200 is readable by the next GET, even while its
ingest is still queued (the worker is stopped), and every such object is stored once a worker runs.
A multipart upload is readable when its completion answers; its parts wait in the spool and the
object is ingested once, as a whole."""
from __future__ import annotations

import io

import pytest
import redis

from boto3.s3.transfer import TransferConfig

from tests.s3clients import boto3_client
from tests.stack import MiB, Stack, copies_on_nodes, each_once, random_bytes, wait_for
from workers.queue import SmallFileQueue


@pytest.fixture(scope="module")
def idle_stack(tmp_path_factory, backends):
    s = Stack(tmp_path_factory.mktemp("raw"), backends, s3=True, worker=False)
    yield s
    s.stop()


def test_a_multipart_object_is_readable_at_completion_and_ingested_once_as_a_whole(idle_stack):
    s3 = boto3_client(idle_stack, idle_stack.s3_credentials("acme"))
    s3.create_bucket(Bucket="parts")
    data = random_bytes(12 * MiB + 123, seed=77)
    five = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.upload_fileobj(io.BytesIO(data), "parts", "big", Config=five)  # 3 parts, the worker stopped
    assert s3.get_object(Bucket="parts", Key="big")["Body"].read() == data  # from the spool
    assert s3.get_object(Bucket="parts", Key="big", Range="bytes=5242870-5242889")["Body"].read() == \
        data[5242870:5242890]  # across the first part's end
    assert idle_stack.chunk_files() == {}  # no byte on the nodes yet
    with idle_stack.metadata() as meta:
        name = meta.namespace.get_object_name("parts/big")
        assert name["etag"].endswith("-3") and meta.files.get_file(name["file"]).status == "queued"
        idle_stack.start_worker()
        wait_for(lambda: meta.files.get_file(name["file"]).status == "stored", timeout=120, what="the object stored")
        hashes = [h for page in meta.files.iter_manifest(name["file"]) for h in page.hashes]
        assert len(hashes) == -(-len(data) // idle_stack.settings.chunk_size)
        assert copies_on_nodes(idle_stack, hashes) == each_once(idle_stack, hashes)  # each fragment once
        parts = list(meta.db.files.find({"kind": "part"}))
        assert parts and all(p["status"] == "deleted" for p in parts)
    assert s3.get_object(Bucket="parts", Key="big")["Body"].read() == data
    idle_stack.stop_proc("worker")


def test_200_puts_each_read_back_at_once_with_the_worker_stopped_then_all_stored(idle_stack):
    s3 = boto3_client(idle_stack, idle_stack.s3_credentials("acme"))
    s3.create_bucket(Bucket="raw")
    for i in range(200):
        data = random_bytes(100 + i * 37, seed=i)
        s3.put_object(Bucket="raw", Key=f"obj/{i:03d}", Body=data)
        assert s3.get_object(Bucket="raw", Key=f"obj/{i:03d}")["Body"].read() == data
    with idle_stack.metadata() as meta:
        files = [d["file"] for d in meta.db.objects.find({"bucket": "raw"})]
        assert len(files) == 200
        assert set(meta.files.file_states(files).values()) == {"queued"}  # nothing ingested yet
        # one-chunk objects wait on the small-file list for one drain, not as 200 ingest tasks
        listed = redis.Redis.from_url(idle_stack.settings.redis_url).lrange(SmallFileQueue.LIST, 0, -1)
        assert sorted(item.decode().split()[0] for item in listed) == sorted(files)
        assert s3.get_object(Bucket="raw", Key="obj/150", Range="bytes=5-9")["Body"].read() == \
            random_bytes(100 + 150 * 37, seed=150)[5:10]
        idle_stack.start_worker()
        wait_for(lambda: set(meta.files.file_states(files).values()) == {"stored"}, timeout=180,
                 what="all 200 objects stored")
        for i in (0, 99, 199):
            assert s3.get_object(Bucket="raw", Key=f"obj/{i:03d}")["Body"].read() == random_bytes(100 + i * 37, i)
