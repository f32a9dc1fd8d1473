"""The S3 web process killed with kill -9 in the middle of a PUT and of a multipart upload: nothing is
half-visible, beat cleans the spool, and fsck finds the store clean."""
from __future__ import annotations

import os
import signal
import subprocess
import threading

import pytest
import requests
from botocore.exceptions import ClientError

from tests.s3clients import boto3_client, sign
from tests.stack import BIN, ROOT, MiB, Stack, random_bytes, random_chunks, wait_for


@pytest.fixture(scope="module")
def crash_stack(tmp_path_factory, backends):
    s = Stack(tmp_path_factory.mktemp("s3crash"), backends, s3=True, beat=True, gc_interval_s=1, gc_grace_s=2,
              stuck_after_s=2, spool_abandon_s=2, gc_lock_ttl_s=3)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def meta(crash_stack):
    with crash_stack.metadata() as r:
        yield r


@pytest.fixture(scope="module")
def keys(crash_stack):
    keys = crash_stack.s3_credentials("acme")
    boto3_client(crash_stack, keys).create_bucket(Bucket="crash")
    return keys


def put_killed_midway(s: Stack, keys, path: str, seed: int) -> None:
    """Stream a PUT (HTTP chunked, unsigned payload) and kill -9 the S3 server once its spool has
    bytes of it; the client sees the connection fail."""
    spool = s.settings.spool_dir
    before = set(os.listdir(spool))
    gate = threading.Event()
    outcome: list = []

    def body():
        yield from random_chunks(16 * MiB, seed)
        gate.wait(60)
        yield from random_chunks(8 * MiB, seed + 1)

    def client():
        url = f"{s.s3_url}{path}"
        signed = sign("PUT", url, keys, payload_hash="UNSIGNED-PAYLOAD")
        try:
            outcome.append(requests.put(url, data=body(), headers=signed.headers, timeout=120).status_code)
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    upload = wait_for(lambda: next(iter(set(os.listdir(spool)) - before), None), what="a spool directory")
    wait_for(lambda: len(os.listdir(spool / upload)) >= 4, what="chunks in the spool")
    os.killpg(s.procs["s3"].pid, signal.SIGKILL)
    s.procs["s3"].wait(10)
    gate.set()
    thread.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], requests.RequestException), outcome
    s.start_s3()
    wait_for(lambda: not (spool / upload).exists(), timeout=60, interval=0.2, what="the spool cleaned")


def fsck_clean(s: Stack) -> None:
    done = subprocess.run([str(BIN / "minis3"), "fsck"], env=s.env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_s3_server_killed_mid_put_leaves_nothing_visible(crash_stack, keys, meta):
    s3 = boto3_client(crash_stack, keys)
    s3.put_object(Bucket="crash", Key="stays", Body=b"before the crash")
    files = meta.db.files.count_documents({})
    put_killed_midway(crash_stack, keys, "/crash/killed-put", seed=9100)
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket="crash", Key="killed-put")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="crash")["Contents"]] == ["stays"]
    assert meta.db.files.count_documents({}) == files  # never recorded
    assert s3.get_object(Bucket="crash", Key="stays")["Body"].read() == b"before the crash"
    fsck_clean(crash_stack)


def test_s3_server_killed_mid_multipart_keeps_the_finished_parts_only(crash_stack, keys, meta):
    s3 = boto3_client(crash_stack, keys)
    uid = s3.create_multipart_upload(Bucket="crash", Key="killed-mp")["UploadId"]
    part1 = random_bytes(5 * MiB, seed=9200)
    e1 = s3.upload_part(Bucket="crash", Key="killed-mp", UploadId=uid, PartNumber=1, Body=part1)["ETag"]
    put_killed_midway(crash_stack, keys, f"/crash/killed-mp?partNumber=2&uploadId={uid}", seed=9300)
    s3 = boto3_client(crash_stack, keys)
    assert [p["PartNumber"] for p in s3.list_parts(Bucket="crash", Key="killed-mp", UploadId=uid)["Parts"]] == [1]
    with pytest.raises(ClientError):
        s3.head_object(Bucket="crash", Key="killed-mp")
    s3.complete_multipart_upload(Bucket="crash", Key="killed-mp", UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]})
    assert s3.get_object(Bucket="crash", Key="killed-mp")["Body"].read() == part1
    fsck_clean(crash_stack)
