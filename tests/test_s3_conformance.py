"""S3 behaviours that conformance suites check and real clients meet: a part's own checksum on a
GET of that part, BadDigest for a whole-object checksum a completion cannot match, an empty
continuation token that starts a listing from the beginning, non-ASCII user metadata, the order of
object tags, GetObjectTorrent, keys with C1 characters and paths that are not UTF-8, and version ids
of a bucket only ever suspended."""
from __future__ import annotations

import base64
import hashlib

import pytest
from botocore.exceptions import ClientError

import requests

from tests.s3clients import boto3_client, sign
from tests.stack import MiB, random_bytes


@pytest.fixture(scope="module")
def s3(s3_stack, s3_keys):
    client = boto3_client(s3_stack, s3_keys)
    client.create_bucket(Bucket="conf")
    return client


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def upload_parts(s3, key: str, algorithm: str, parts: list[bytes], **create) -> tuple[str, list[dict]]:
    upload = s3.create_multipart_upload(Bucket="conf", Key=key, ChecksumAlgorithm=algorithm, **create)["UploadId"]
    done = []
    for number, body in enumerate(parts, 1):
        r = s3.upload_part(Bucket="conf", Key=key, UploadId=upload, PartNumber=number, Body=body,
                           ChecksumAlgorithm=algorithm)
        done.append({"ETag": r["ETag"], "PartNumber": number, f"Checksum{algorithm}": r[f"Checksum{algorithm}"]})
    return upload, done


@pytest.mark.parametrize("algorithm, kind", [("SHA256", "COMPOSITE"), ("CRC32", "FULL_OBJECT")])
def test_a_get_of_one_part_returns_that_parts_checksum_and_the_objects_type(s3, algorithm, kind):
    parts = [random_bytes(5 * MiB, seed=71), random_bytes(MiB + 3, seed=72)]
    key = f"parts-{algorithm}"
    upload, done = upload_parts(s3, key, algorithm, parts, ChecksumType=kind)
    s3.complete_multipart_upload(Bucket="conf", Key=key, UploadId=upload, MultipartUpload={"Parts": done})
    for number, body in enumerate(parts, 1):
        got = s3.get_object(Bucket="conf", Key=key, PartNumber=number, ChecksumMode="ENABLED")
        assert got["Body"].read() == body
        assert got[f"Checksum{algorithm}"] == done[number - 1][f"Checksum{algorithm}"]
        assert got["ChecksumType"] == kind
    assert s3.head_object(Bucket="conf", Key=key, ChecksumMode="ENABLED")["ChecksumType"] == kind


@pytest.mark.parametrize("list_part_checksums", [True, False])
def test_a_completion_whose_whole_checksum_cannot_match_is_bad_digest(s3, list_part_checksums):
    key = f"bad-digest-{list_part_checksums}"
    upload, done = upload_parts(s3, key, "SHA256", [b"A" * 1024])
    if not list_part_checksums:
        done = [{"ETag": p["ETag"], "PartNumber": p["PartNumber"]} for p in done]
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket="conf", Key=key, UploadId=upload, ChecksumSHA256="bad",
                                     MultipartUpload={"Parts": done})
    assert info.value.response["Error"]["Code"] == "BadDigest"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # nothing was written, and the upload is still there to complete correctly
    assert "Contents" not in s3.list_objects_v2(Bucket="conf", Prefix=key)
    part = b"A" * 1024
    composite = base64.b64encode(hashlib.sha256(hashlib.sha256(part).digest()).digest()).decode() + "-1"
    done = [{**p, "ChecksumSHA256": sha256_b64(part)} for p in done]
    r = s3.complete_multipart_upload(Bucket="conf", Key=key, UploadId=upload, ChecksumSHA256=composite,
                                     MultipartUpload={"Parts": done})
    assert r["ChecksumSHA256"] == composite
    assert s3.get_object(Bucket="conf", Key=key)["Body"].read() == part


def test_an_empty_continuation_token_lists_from_the_beginning(s3):
    for key in ("empty-token/a", "empty-token/b", "empty-token/c"):
        s3.put_object(Bucket="conf", Key=key, Body=b"x")
    r = s3.list_objects_v2(Bucket="conf", Prefix="empty-token/", ContinuationToken="")
    assert r["ContinuationToken"] == "" and r["IsTruncated"] is False
    assert [o["Key"] for o in r["Contents"]] == ["empty-token/a", "empty-token/b", "empty-token/c"]


def with_header(s3, operation: str, name: str, value: str):
    """Have ``s3`` send one raw header on ``operation`` (as botocore sends it: UTF-8)."""
    def add(params, **_):
        params["headers"][name] = value
    s3.meta.events.register(f"before-call.s3.{operation}", add)
    return add


@pytest.fixture
def fresh(s3_stack, s3_keys):
    """A client of its own: header hooks registered on it do not leak into other tests."""
    return boto3_client(s3_stack, s3_keys)


def test_non_ascii_user_metadata_round_trips_through_botocore(fresh):
    with_header(fresh, "PutObject", "x-amz-meta-latin", "Hello World\xe9")
    with_header(fresh, "PutObject", "x-amz-meta-cjk", "\u4e2d\u6587")
    fresh.put_object(Bucket="conf", Key="meta/unicode", Body=b"bar")
    got = fresh.get_object(Bucket="conf", Key="meta/unicode")["Metadata"]
    assert got["latin"] == "Hello World\xe9"  # UTF-8 sent, latin-1 answered: what botocore reads back
    assert got["cjk"].encode("latin-1").decode("utf-8") == "\u4e2d\u6587"  # beyond latin-1: the bytes sent


def test_x_amz_tagging_with_an_empty_value_lists_by_key(fresh):
    with_header(fresh, "PutObject", "x-amz-tagging", "foo=bar&bar")
    fresh.put_object(Bucket="conf", Key="tags/header", Body=b"A" * 100)
    assert fresh.get_object_tagging(Bucket="conf", Key="tags/header")["TagSet"] == [
        {"Key": "bar", "Value": ""}, {"Key": "foo", "Value": "bar"}]


def test_get_object_torrent_is_no_such_key(s3):
    s3.put_object(Bucket="conf", Key="torrent/present", Body=b"bytes")
    for key in ("torrent/present", "torrent/missing"):
        with pytest.raises(ClientError) as info:
            s3.get_object_torrent(Bucket="conf", Key=key)
        assert (info.value.response["ResponseMetadata"]["HTTPStatusCode"],
                info.value.response["Error"]["Code"]) == (404, "NoSuchKey")


def test_a_key_with_c1_characters_is_a_key_and_a_path_not_utf8_is_invalid_uri(s3_stack, s3_keys, s3):
    key = "\xae\x8a-"  # U+00AE U+008A: valid UTF-8, a C1 control character AWS lists as one to avoid
    s3.put_object(Bucket="conf", Key=key, Body=b"c1")
    assert s3.get_object(Bucket="conf", Key=key)["Body"].read() == b"c1"
    url = f"{s3_stack.s3_url}/conf/%AE%8A-"  # the same text as raw latin-1 bytes: not UTF-8
    answer = requests.get(url, headers=sign("GET", url, s3_keys).headers, timeout=30)
    assert answer.status_code == 400
    assert b"<Code>InvalidURI</Code>" in answer.content
    assert b"<Message>Couldn't parse the specified URI.</Message>" in answer.content


def test_a_bucket_only_ever_suspended_answers_writes_without_a_version_id(s3):
    s3.create_bucket(Bucket="conf-suspended")
    s3.put_bucket_versioning(Bucket="conf-suspended", VersioningConfiguration={"Status": "Suspended"})
    assert "VersionId" not in s3.put_object(Bucket="conf-suspended", Key="k", Body=b"one")
    assert "VersionId" not in s3.copy_object(Bucket="conf-suspended", Key="k2",
                                             CopySource={"Bucket": "conf-suspended", "Key": "k"})
    upload = s3.create_multipart_upload(Bucket="conf-suspended", Key="k3")["UploadId"]
    etag = s3.upload_part(Bucket="conf-suspended", Key="k3", UploadId=upload, PartNumber=1, Body=b"p")["ETag"]
    done = s3.complete_multipart_upload(Bucket="conf-suspended", Key="k3", UploadId=upload,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert "VersionId" not in done
    assert s3.get_bucket_versioning(Bucket="conf-suspended")["Status"] == "Suspended"
    s3.put_bucket_versioning(Bucket="conf-suspended", VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_versioning(Bucket="conf-suspended", VersioningConfiguration={"Status": "Suspended"})
    assert s3.put_object(Bucket="conf-suspended", Key="k", Body=b"two")["VersionId"] == "null"
