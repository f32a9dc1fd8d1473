"""Object tagging through boto3 and aws-cli against gunicorn + celery worker: Put/Get/DeleteObjectTagging,
x-amz-tagging on PutObject, CreateMultipartUpload and CopyObject (directives COPY and REPLACE), the
x-amz-tagging-count header, S3's limits, and the tags on the object's MongoDB document."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import requests
from botocore.exceptions import ClientError

from pipeline.namespace.objects import name_id
from tests.s3clients import boto3_client, sign
from tests.stack import BIN, MiB, random_bytes

BUCKET = "tags"


@pytest.fixture(scope="module")
def s3(s3_stack, s3_keys):
    client = boto3_client(s3_stack, s3_keys)
    client.create_bucket(Bucket=BUCKET)
    return client


def failure(call, **kwargs) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    err = info.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"].get("Message", "")


def tag_set(s3, key: str) -> list[dict]:
    return s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]


def name_doc(s3_stack, key: str) -> dict:
    with s3_stack.metadata() as meta:
        return meta.namespace.get_object_name(name_id(BUCKET, key))


def test_put_get_delete_object_tagging_round_trip_and_keep_the_object(s3_stack, s3):
    s3.put_object(Bucket=BUCKET, Key="doc.txt", Body=b"hello")
    before = s3.head_object(Bucket=BUCKET, Key="doc.txt")
    assert tag_set(s3, "doc.txt") == []
    assert "x-amz-tagging-count" not in before["ResponseMetadata"]["HTTPHeaders"]
    tags = [{"Key": "project", "Value": "blue"}, {"Key": "owner", "Value": "ops team"}]
    s3.put_object_tagging(Bucket=BUCKET, Key="doc.txt", Tagging={"TagSet": tags})
    assert tag_set(s3, "doc.txt") == sorted(tags, key=lambda t: t["Key"])  # listed by key, as S3 keeps a set
    assert name_doc(s3_stack, "doc.txt")["tags"] == [["project", "blue"], ["owner", "ops team"]]
    head = s3.head_object(Bucket=BUCKET, Key="doc.txt")
    assert head["ResponseMetadata"]["HTTPHeaders"]["x-amz-tagging-count"] == "2"
    got = s3.get_object(Bucket=BUCKET, Key="doc.txt")
    assert got["TagCount"] == 2 and got["Body"].read() == b"hello"
    assert head["LastModified"] == before["LastModified"] and head["ETag"] == before["ETag"]
    s3.put_object_tagging(Bucket=BUCKET, Key="doc.txt", Tagging={"TagSet": tags[1:]})  # a put replaces the set
    assert tag_set(s3, "doc.txt") == tags[1:]
    assert s3.delete_object_tagging(Bucket=BUCKET, Key="doc.txt")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert tag_set(s3, "doc.txt") == []
    assert "TagCount" not in s3.get_object(Bucket=BUCKET, Key="doc.txt")
    assert failure(s3.put_object_tagging, Bucket=BUCKET, Key="missing", Tagging={"TagSet": tags})[:2] == \
        ("NoSuchKey", 404)
    assert failure(s3.get_object_tagging, Bucket=BUCKET, Key="missing")[:2] == ("NoSuchKey", 404)


def test_x_amz_tagging_on_put_and_an_overwrite_replaces_the_tags(s3):
    s3.put_object(Bucket=BUCKET, Key="put.bin", Body=b"1", Tagging="a=1&b=two%20words&empty=")
    assert tag_set(s3, "put.bin") == [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "two words"},
                                      {"Key": "empty", "Value": ""}]
    s3.put_object(Bucket=BUCKET, Key="put.bin", Body=b"2", Tagging="c=3")
    assert tag_set(s3, "put.bin") == [{"Key": "c", "Value": "3"}]
    s3.put_object(Bucket=BUCKET, Key="put.bin", Body=b"3")  # no tags given: none kept, as S3
    assert tag_set(s3, "put.bin") == []
    s3.put_object(Bucket=BUCKET, Key="put.bin", Body=b"4", Tagging="flag&x=%2B1")  # a key alone: empty value
    assert tag_set(s3, "put.bin") == [{"Key": "flag", "Value": ""}, {"Key": "x", "Value": "+1"}]


def test_copy_keeps_the_source_tags_or_replaces_them_with_the_directive(s3):
    s3.put_object(Bucket=BUCKET, Key="src", Body=b"source", Tagging="origin=src")
    s3.copy_object(Bucket=BUCKET, Key="copied", CopySource=f"{BUCKET}/src")
    assert tag_set(s3, "copied") == [{"Key": "origin", "Value": "src"}]
    s3.copy_object(Bucket=BUCKET, Key="retagged", CopySource=f"{BUCKET}/src", TaggingDirective="REPLACE",
                   Tagging="fresh=yes")
    assert tag_set(s3, "retagged") == [{"Key": "fresh", "Value": "yes"}]
    s3.copy_object(Bucket=BUCKET, Key="untagged", CopySource=f"{BUCKET}/src", TaggingDirective="REPLACE")
    assert tag_set(s3, "untagged") == []
    s3.copy_object(Bucket=BUCKET, Key="new-meta", CopySource=f"{BUCKET}/src", MetadataDirective="REPLACE",
                   Metadata={"m": "1"})  # metadata replaced, tags copied: two directives
    assert tag_set(s3, "new-meta") == [{"Key": "origin", "Value": "src"}]
    assert s3.head_object(Bucket=BUCKET, Key="new-meta")["Metadata"] == {"m": "1"}
    assert failure(s3.copy_object, Bucket=BUCKET, Key="bad", CopySource=f"{BUCKET}/src",
                   TaggingDirective="MERGE")[:2] == ("InvalidArgument", 400)
    assert tag_set(s3, "src") == [{"Key": "origin", "Value": "src"}]


def test_multipart_upload_tags_are_applied_at_completion(s3):
    uid = s3.create_multipart_upload(Bucket=BUCKET, Key="mp.bin", Tagging="stage=raw&team=ml")["UploadId"]
    first, last = random_bytes(5 * MiB, 71), b"tail"
    e1 = s3.upload_part(Bucket=BUCKET, Key="mp.bin", UploadId=uid, PartNumber=1, Body=first)["ETag"]
    e2 = s3.upload_part(Bucket=BUCKET, Key="mp.bin", UploadId=uid, PartNumber=2, Body=last)["ETag"]
    assert failure(s3.get_object_tagging, Bucket=BUCKET, Key="mp.bin")[:2] == ("NoSuchKey", 404)
    s3.complete_multipart_upload(Bucket=BUCKET, Key="mp.bin", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert tag_set(s3, "mp.bin") == [{"Key": "stage", "Value": "raw"}, {"Key": "team", "Value": "ml"}]
    assert s3.head_object(Bucket=BUCKET, Key="mp.bin")["ResponseMetadata"]["HTTPHeaders"][
        "x-amz-tagging-count"] == "2"


def test_object_tag_limits_are_s3s_and_a_refused_set_changes_nothing(s3):
    s3.put_object(Bucket=BUCKET, Key="limits", Body=b"x", Tagging="keep=me")
    ten = [{"Key": f"k{i}", "Value": "v"} for i in range(10)]
    s3.put_object_tagging(Bucket=BUCKET, Key="limits", Tagging={"TagSet": ten})
    assert tag_set(s3, "limits") == ten
    for tags, message in (
            (ten + [{"Key": "k10", "Value": "v"}], "Object tags cannot be greater than 10"),
            ([{"Key": "k" * 129, "Value": "v"}], "The TagKey you have provided is invalid"),
            ([{"Key": "k", "Value": "v" * 257}], "The TagValue you have provided is invalid"),
            ([{"Key": "aws:owner", "Value": "v"}], "Your TagKey cannot be prefixed with aws:"),
            ([{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}],
             "Cannot provide multiple Tags with the same key")):
        assert failure(s3.put_object_tagging, Bucket=BUCKET, Key="limits", Tagging={"TagSet": tags}) == \
            ("InvalidTag", 400, message)
    assert tag_set(s3, "limits") == ten
    s3.put_object_tagging(Bucket=BUCKET, Key="limits", Tagging={"TagSet": [{"Key": "ключ" * 32, "Value": "é" * 256}]})
    assert tag_set(s3, "limits")[0]["Key"] == "ключ" * 32  # 128 characters, 256 UTF-8 bytes
    header = "&".join(f"k{i}=v" for i in range(11))
    assert failure(s3.put_object, Bucket=BUCKET, Key="limits", Body=b"y", Tagging=header) == \
        ("InvalidTag", 400, "Object tags cannot be greater than 10")
    assert failure(s3.put_object, Bucket=BUCKET, Key="limits", Body=b"y", Tagging="a=1&a=2")[:2] == \
        ("InvalidArgument", 400)
    assert failure(s3.create_multipart_upload, Bucket=BUCKET, Key="limits", Tagging="aws:x=1")[:2] == \
        ("InvalidTag", 400)
    assert s3.get_object(Bucket=BUCKET, Key="limits")["Body"].read() == b"x"  # nothing was written


@pytest.mark.parametrize("body", [b"<not-xml", b"<Tagging/>", b"<Other><TagSet/></Other>",
                                  b"<Tagging><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging>"])
def test_a_malformed_tagging_document_is_malformed_xml(s3_stack, s3_keys, s3, body):
    s3.put_object(Bucket=BUCKET, Key="malformed", Body=b"m")
    url = f"{s3_stack.s3_url}/{BUCKET}/malformed?tagging"
    signed = sign("PUT", url, s3_keys, body=body)
    r = requests.put(url, data=body, headers=signed.headers, timeout=30)
    assert r.status_code == 400 and "<Code>MalformedXML</Code>" in r.text


def test_aws_cli_put_object_tagging(s3_stack, s3_keys, s3, tmp_path):
    s3.put_object(Bucket=BUCKET, Key="cli.txt", Body=b"cli")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": s3_keys[0], "AWS_SECRET_ACCESS_KEY": s3_keys[1],
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"), "HOME": str(tmp_path)}
    base = [str(BIN / "aws"), "--endpoint-url", s3_stack.s3_url, "s3api"]
    done = subprocess.run(base + ["put-object-tagging", "--bucket", BUCKET, "--key", "cli.txt", "--tagging",
                                  "TagSet=[{Key=env,Value=prod}]"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(base + ["get-object-tagging", "--bucket", BUCKET, "--key", "cli.txt"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["TagSet"] == [{"Key": "env", "Value": "prod"}]
