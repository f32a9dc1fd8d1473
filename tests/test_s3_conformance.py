"""S3 behaviours that conformance suites check and real clients meet: a part's own checksum on a
GET of that part, BadDigest for a whole-object checksum a completion cannot match, and an empty
continuation token that starts a listing from the beginning."""
from __future__ import annotations

import base64
import hashlib

import pytest
from botocore.exceptions import ClientError

from tests.s3clients import boto3_client
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
