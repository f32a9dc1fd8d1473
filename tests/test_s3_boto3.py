"""S3 with boto3 (default configuration: CRC32 checksums on) against gunicorn + celery worker."""
from __future__ import annotations

import hashlib

import pytest
from botocore.exceptions import ClientError

from tests.s3clients import boto3_client
from tests.stack import MiB, random_bytes, wait_for


@pytest.fixture(scope="module")
def s3(s3_stack, s3_keys):
    client = boto3_client(s3_stack, s3_keys)
    client.create_bucket(Bucket="data")
    return client


def error_code(exc: ClientError) -> tuple[str, int]:
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.mark.parametrize("size", [0, 1, MiB + 7])
def test_put_get_head_delete_round_trip(s3, size):
    data = random_bytes(size, seed=size)
    key = f"round/{size}.bin"
    put = s3.put_object(Bucket="data", Key=key, Body=data)
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    assert "ChecksumCRC32" in put
    got = s3.get_object(Bucket="data", Key=key)
    assert got["Body"].read() == data
    assert got["ETag"] == put["ETag"] and got["ContentLength"] == size
    head = s3.head_object(Bucket="data", Key=key)
    assert head["ContentLength"] == size and head["ETag"] == put["ETag"]
    assert head["ChecksumCRC32"] == put["ChecksumCRC32"]
    assert s3.delete_object(Bucket="data", Key=key)["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="data", Key=key)
    assert error_code(info.value) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket="data", Key=key)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_put_object_is_ingested_into_chunks(s3_stack, s3):
    data = random_bytes(3 * MiB, seed=77)
    before = set(s3_stack.chunk_files())
    s3.put_object(Bucket="data", Key="ingested.bin", Body=data)
    added = wait_for(lambda: len(set(s3_stack.chunk_files()) - before) >= 3, what="3 new chunks on the nodes")
    assert added
    assert s3.get_object(Bucket="data", Key="ingested.bin")["Body"].read() == data


@pytest.mark.parametrize("key", ["with space", "plus+sign", "percent%41", "question?mark", "hash#tag",
                                 "ünïcødé/文件", "/leading/slash", "a//double", "dots/../x", "~tilde*star"])
def test_keys_with_characters_s3_allows(s3, key):
    s3.put_object(Bucket="data", Key=key, Body=key.encode())
    assert s3.get_object(Bucket="data", Key=key)["Body"].read() == key.encode()
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="data", Prefix=key)["Contents"]]
    assert key in listed
    s3.delete_object(Bucket="data", Key=key)


def test_answers_carry_request_id_server_and_security_headers(s3):
    headers = s3.put_object(Bucket="data", Key="h", Body=b"x")["ResponseMetadata"]["HTTPHeaders"]
    assert headers["server"] == "minis3"
    assert len(headers["x-amz-request-id"]) == 16 and headers["x-request-id"] == headers["x-amz-request-id"]
    assert headers["x-content-type-options"] == "nosniff"
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="data", Key="missing")
    assert info.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    assert info.value.response["Error"]["Key"] == "missing"
