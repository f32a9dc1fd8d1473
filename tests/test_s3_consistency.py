"""Read-after-write through S3: a PUT that answered 200 is readable by the next GET, even while its
ingest is still queued (the worker is stopped), and every such object is stored once a worker runs."""
from __future__ import annotations

import pytest

from tests.s3clients import boto3_client
from tests.stack import Stack, random_bytes, wait_for


@pytest.fixture(scope="module")
def idle_stack(tmp_path_factory, backends):
    s = Stack(tmp_path_factory.mktemp("raw"), backends, s3=True, worker=False)
    yield s
    s.stop()


def test_200_puts_each_read_back_at_once_with_the_worker_stopped_then_all_stored(idle_stack):
    s3 = boto3_client(idle_stack, idle_stack.s3_credentials("acme"))
    s3.create_bucket(Bucket="raw")
    for i in range(200):
        data = random_bytes(100 + i * 37, seed=i)
        s3.put_object(Bucket="raw", Key=f"obj/{i:03d}", Body=data)
        assert s3.get_object(Bucket="raw", Key=f"obj/{i:03d}")["Body"].read() == data
    with idle_stack.metadata() as repo:
        files = [d["file"] for d in repo.objects.find({"bucket": "raw"})]
        assert len(files) == 200
        assert set(repo.file_states(files).values()) == {"queued"}  # nothing ingested yet
        assert s3.get_object(Bucket="raw", Key="obj/150", Range="bytes=5-9")["Body"].read() == \
            random_bytes(100 + 150 * 37, seed=150)[5:10]
        idle_stack.start_worker()
        wait_for(lambda: set(repo.file_states(files).values()) == {"stored"}, timeout=180,
                 what="all 200 objects stored")
        for i in (0, 99, 199):
            assert s3.get_object(Bucket="raw", Key=f"obj/{i:03d}")["Body"].read() == random_bytes(100 + i * 37, i)
