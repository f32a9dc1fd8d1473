"""Bucket versioning through boto3 against gunicorn + celery worker: Put/GetBucketVersioning,
versions of PUT, copy and multipart, GET/HEAD/DELETE/tagging with versionId, delete markers,
ListObjectVersions, DeleteObjects with VersionId, suspended buckets' null version, and dedup and GC
across versions (chunks shared between versions, freed only when no version references them)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from pipeline.namespace.lifecycle import apply_lifecycle
from pipeline.namespace.objects import name_id
from pipeline.store import ObjectStore
from tests.s3clients import boto3_client
from tests.stack import BIN, MiB, random_bytes, wait_for


@pytest.fixture(scope="module")
def s3(s3_stack, s3_keys):
    return boto3_client(s3_stack, s3_keys)


def versioned(s3, bucket: str) -> str:
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def failure(call, **kwargs) -> tuple[str, int, dict]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    err = info.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["ResponseMetadata"]["HTTPHeaders"]


def settle(s3_stack) -> None:
    with s3_stack.metadata() as meta:
        wait_for(lambda: meta.db.files.count_documents({"status": {"$in": ["queued", "processing"]}}) == 0,
                 what="every file ingested")


def test_versioning_configuration_enabled_suspended_never_back(s3):
    s3.create_bucket(Bucket="vconf")
    assert "Status" not in s3.get_bucket_versioning(Bucket="vconf")
    s3.put_bucket_versioning(Bucket="vconf", VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket="vconf")["Status"] == "Enabled"
    s3.put_bucket_versioning(Bucket="vconf", VersioningConfiguration={"Status": "Suspended"})
    assert s3.get_bucket_versioning(Bucket="vconf")["Status"] == "Suspended"
    code, status, _ = failure(s3.put_bucket_versioning, Bucket="vconf",
                              VersioningConfiguration={"Status": "Disabled"})
    assert (code, status) == ("MalformedXML", 400)
    assert s3.get_bucket_versioning(Bucket="vconf")["Status"] == "Suspended"


def test_unversioned_bucket_answers_no_version_ids(s3):
    s3.create_bucket(Bucket="plain")
    put = s3.put_object(Bucket="plain", Key="k", Body=b"one")
    assert "VersionId" not in put
    assert "VersionId" not in s3.head_object(Bucket="plain", Key="k")
    assert s3.get_object(Bucket="plain", Key="k", VersionId="null")["Body"].read() == b"one"
    v = s3.list_object_versions(Bucket="plain")["Versions"]
    assert [(x["Key"], x["VersionId"], x["IsLatest"]) for x in v] == [("k", "null", True)]
    code, status, _ = failure(s3.get_object, Bucket="plain", Key="k", VersionId="nonsense")
    assert (code, status) == ("InvalidArgument", 400)
    deleted = s3.delete_object(Bucket="plain", Key="k")
    assert "VersionId" not in deleted and "DeleteMarker" not in deleted


def test_each_put_is_a_version_readable_by_id(s3):
    b = versioned(s3, "vput")
    ids = [s3.put_object(Bucket=b, Key="doc", Body=f"v{i}".encode())["VersionId"] for i in range(3)]
    assert len(set(ids)) == 3 and "null" not in ids
    for i, vid in enumerate(ids):
        got = s3.get_object(Bucket=b, Key="doc", VersionId=vid)
        assert got["Body"].read() == f"v{i}".encode() and got["VersionId"] == vid
        assert s3.head_object(Bucket=b, Key="doc", VersionId=vid)["ContentLength"] == 2
    latest = s3.get_object(Bucket=b, Key="doc")
    assert latest["Body"].read() == b"v2" and latest["VersionId"] == ids[2]
    listed = s3.list_object_versions(Bucket=b)["Versions"]
    assert [(v["VersionId"], v["IsLatest"]) for v in listed] == [(ids[2], True), (ids[1], False), (ids[0], False)]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=b)["Contents"]] == ["doc"]
    code, status, _ = failure(s3.get_object, Bucket=b, Key="doc", VersionId="0" * 19 + "abcdef")
    assert (code, status) == ("NoSuchVersion", 404)
    code, status, _ = failure(s3.get_object, Bucket=b, Key="doc", VersionId="not-an-id")
    assert (code, status) == ("InvalidArgument", 400)


def test_delete_writes_a_marker_and_deleting_the_marker_restores(s3):
    b = versioned(s3, "vdel")
    v1 = s3.put_object(Bucket=b, Key="k", Body=b"alive")["VersionId"]
    d = s3.delete_object(Bucket=b, Key="k")
    assert d["DeleteMarker"] is True and d["VersionId"] not in (v1, "null")
    marker = d["VersionId"]
    code, status, headers = failure(s3.get_object, Bucket=b, Key="k")
    assert (code, status) == ("NoSuchKey", 404)
    assert headers["x-amz-delete-marker"] == "true" and headers["x-amz-version-id"] == marker
    code, status, headers = failure(s3.head_object, Bucket=b, Key="k")
    assert status == 404 and headers["x-amz-delete-marker"] == "true"
    code, status, headers = failure(s3.get_object, Bucket=b, Key="k", VersionId=marker)
    assert (code, status) == ("MethodNotAllowed", 405) and headers["x-amz-delete-marker"] == "true"
    assert s3.get_object(Bucket=b, Key="k", VersionId=v1)["Body"].read() == b"alive"
    assert s3.list_objects_v2(Bucket=b)["KeyCount"] == 0
    listing = s3.list_object_versions(Bucket=b)
    assert [(m["VersionId"], m["IsLatest"]) for m in listing["DeleteMarkers"]] == [(marker, True)]
    assert [(v["VersionId"], v["IsLatest"]) for v in listing["Versions"]] == [(v1, False)]
    gone = s3.delete_object(Bucket=b, Key="k", VersionId=marker)
    assert gone["DeleteMarker"] is True and gone["VersionId"] == marker
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"alive"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=b)["Contents"]] == ["k"]


def test_deleting_the_current_version_makes_the_previous_current(s3):
    b = versioned(s3, "vprev")
    v1 = s3.put_object(Bucket=b, Key="k", Body=b"first")["VersionId"]
    v2 = s3.put_object(Bucket=b, Key="k", Body=b"second")["VersionId"]
    assert s3.delete_object(Bucket=b, Key="k", VersionId=v2)["VersionId"] == v2
    got = s3.get_object(Bucket=b, Key="k")
    assert got["Body"].read() == b"first" and got["VersionId"] == v1
    s3.delete_object(Bucket=b, Key="k", VersionId=v1)
    assert failure(s3.head_object, Bucket=b, Key="k")[1] == 404
    assert "Versions" not in s3.list_object_versions(Bucket=b)
    s3.delete_bucket(Bucket=b)  # nothing left: the bucket is empty


def test_bucket_with_only_versions_is_not_empty(s3):
    b = versioned(s3, "vnotempty")
    s3.put_object(Bucket=b, Key="k", Body=b"x")
    s3.delete_object(Bucket=b, Key="k")
    assert failure(s3.delete_bucket, Bucket=b)[:2] == ("BucketNotEmpty", 409)


def test_suspended_writes_replace_the_null_version(s3):
    s3.create_bucket(Bucket="vsusp")
    s3.put_object(Bucket="vsusp", Key="k", Body=b"before")  # becomes the null version
    s3.put_bucket_versioning(Bucket="vsusp", VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket="vsusp", Key="k", Body=b"enabled")["VersionId"]
    s3.put_bucket_versioning(Bucket="vsusp", VersioningConfiguration={"Status": "Suspended"})
    assert s3.put_object(Bucket="vsusp", Key="k", Body=b"s1").get("VersionId") == "null"
    assert s3.put_object(Bucket="vsusp", Key="k", Body=b"s2").get("VersionId") == "null"
    versions = s3.list_object_versions(Bucket="vsusp")["Versions"]
    assert [(v["VersionId"], v["IsLatest"]) for v in versions] == [("null", True), (v1, False)]
    assert s3.get_object(Bucket="vsusp", Key="k", VersionId="null")["Body"].read() == b"s2"
    d = s3.delete_object(Bucket="vsusp", Key="k")
    assert d["DeleteMarker"] is True and d["VersionId"] == "null"
    listing = s3.list_object_versions(Bucket="vsusp")
    assert [m["VersionId"] for m in listing["DeleteMarkers"]] == ["null"]
    assert [v["VersionId"] for v in listing["Versions"]] == [v1]


def test_objects_before_versioning_become_null_versions(s3):
    s3.create_bucket(Bucket="vnull")
    s3.put_object(Bucket="vnull", Key="old", Body=b"old bytes")
    s3.put_bucket_versioning(Bucket="vnull", VersioningConfiguration={"Status": "Enabled"})
    assert s3.head_object(Bucket="vnull", Key="old")["VersionId"] == "null"
    v2 = s3.put_object(Bucket="vnull", Key="old", Body=b"new bytes")["VersionId"]
    assert s3.get_object(Bucket="vnull", Key="old", VersionId="null")["Body"].read() == b"old bytes"
    versions = s3.list_object_versions(Bucket="vnull")["Versions"]
    assert [(v["VersionId"], v["IsLatest"]) for v in versions] == [(v2, True), ("null", False)]


def test_copy_from_a_version_and_multipart_versions(s3):
    b = versioned(s3, "vcopy")
    v1 = s3.put_object(Bucket=b, Key="src", Body=b"old")["VersionId"]
    s3.put_object(Bucket=b, Key="src", Body=b"new")
    copied = s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": b, "Key": "src", "VersionId": v1})
    assert copied["CopySourceVersionId"] == v1 and copied["VersionId"]
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"old"
    up = s3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    part = s3.upload_part(Bucket=b, Key="mp", UploadId=up, PartNumber=1, Body=b"mp bytes")
    done = s3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=up,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert done["VersionId"] == s3.head_object(Bucket=b, Key="mp")["VersionId"]


def test_versioned_writes_touch_no_other_buckets_objects(s3):
    """A version becoming current and a delete marker each change their own key only, never an
    unversioned bucket's object (the stand-in once matched such writes by their $or alone)."""
    s3.create_bucket(Bucket="vplain")
    s3.put_object(Bucket="vplain", Key="src", Body=b"plain source")
    s3.put_object(Bucket="vplain", Key="other", Body=b"plain other")
    b = versioned(s3, "vtarget")
    copied = s3.copy_object(Bucket=b, Key="dst", CopySource={"Bucket": "vplain", "Key": "src"})
    s3.put_object(Bucket=b, Key="put", Body=b"versioned")
    marker = s3.delete_object(Bucket=b, Key="put")
    assert marker["DeleteMarker"] is True
    assert s3.get_object(Bucket=b, Key="dst")["Body"].read() == b"plain source"
    assert s3.get_object(Bucket=b, Key="dst")["VersionId"] == copied["VersionId"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="vplain")["Contents"]] == ["other", "src"]
    assert s3.get_object(Bucket="vplain", Key="src")["Body"].read() == b"plain source"
    assert s3.get_object(Bucket="vplain", Key="other")["Body"].read() == b"plain other"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=b)["Contents"]] == ["dst"]


def test_tagging_with_version_id(s3):
    b = versioned(s3, "vtags")
    v1 = s3.put_object(Bucket=b, Key="k", Body=b"1")["VersionId"]
    v2 = s3.put_object(Bucket=b, Key="k", Body=b"2")["VersionId"]
    s3.put_object_tagging(Bucket=b, Key="k", VersionId=v1, Tagging={"TagSet": [{"Key": "a", "Value": "1"}]})
    assert s3.get_object_tagging(Bucket=b, Key="k", VersionId=v1)["TagSet"] == [{"Key": "a", "Value": "1"}]
    assert s3.get_object_tagging(Bucket=b, Key="k")["TagSet"] == []
    s3.put_object_tagging(Bucket=b, Key="k", Tagging={"TagSet": [{"Key": "b", "Value": "2"}]})
    assert s3.get_object_tagging(Bucket=b, Key="k", VersionId=v2)["TagSet"] == [{"Key": "b", "Value": "2"}]
    assert s3.get_object(Bucket=b, Key="k")["TagCount"] == 1


ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def public(s3, bucket: str, version: str | None = None) -> bool:
    args = {"VersionId": version} if version else {}
    grants = s3.get_object_acl(Bucket=bucket, Key="k", **args)["Grants"]
    return any(g["Grantee"].get("URI") == ALL_USERS and g["Permission"] == "READ" for g in grants)


def test_object_acl_with_version_id(s3):
    """An ACL set without a version id is the current version's, read back by its id too; one set
    with a version id is that version's alone."""
    b = versioned(s3, "vacls")
    v1 = s3.put_object(Bucket=b, Key="k", Body=b"1")["VersionId"]
    v2 = s3.put_object(Bucket=b, Key="k", Body=b"2")["VersionId"]
    answer = s3.put_object_acl(Bucket=b, Key="k", ACL="public-read")
    assert answer["ResponseMetadata"]["HTTPHeaders"]["x-amz-version-id"] == v2
    assert (public(s3, b), public(s3, b, v2), public(s3, b, v1)) == (True, True, False)
    s3.put_object_acl(Bucket=b, Key="k", VersionId=v1, ACL="public-read")
    s3.put_object_acl(Bucket=b, Key="k", VersionId=v2, ACL="private")
    assert (public(s3, b), public(s3, b, v2), public(s3, b, v1)) == (False, False, True)
    assert failure(s3.put_object_acl, Bucket=b, Key="k", VersionId="0" * 25, ACL="private")[:2] == \
        ("NoSuchVersion", 404)


def test_an_anonymous_read_of_a_version_is_decided_by_that_versions_acl(s3_stack, s3):
    anonymous = boto3.client("s3", endpoint_url=s3_stack.s3_url, region_name="us-east-1",
                             config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))
    b = versioned(s3, "vpublic")
    v1 = s3.put_object(Bucket=b, Key="k", Body=b"public one", ACL="public-read")["VersionId"]
    v2 = s3.put_object(Bucket=b, Key="k", Body=b"private two")["VersionId"]
    assert anonymous.get_object(Bucket=b, Key="k", VersionId=v1)["Body"].read() == b"public one"
    assert failure(anonymous.get_object, Bucket=b, Key="k", VersionId=v2)[:2] == ("AccessDenied", 403)
    assert failure(anonymous.get_object, Bucket=b, Key="k")[:2] == ("AccessDenied", 403)


def test_delete_objects_with_version_ids(s3):
    b = versioned(s3, "vmulti")
    v1 = s3.put_object(Bucket=b, Key="a", Body=b"a1")["VersionId"]
    v2 = s3.put_object(Bucket=b, Key="a", Body=b"a2")["VersionId"]
    s3.put_object(Bucket=b, Key="b", Body=b"b1")
    result = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "a", "VersionId": v2}, {"Key": "b"}]})
    deleted = {d["Key"]: d for d in result["Deleted"]}
    assert deleted["a"]["VersionId"] == v2 and "DeleteMarker" not in deleted["a"]
    assert deleted["b"]["DeleteMarker"] is True and deleted["b"]["DeleteMarkerVersionId"]
    assert s3.get_object(Bucket=b, Key="a")["VersionId"] == v1
    assert failure(s3.get_object, Bucket=b, Key="b")[1] == 404


def test_list_object_versions_pages_with_key_and_version_markers(s3):
    b = versioned(s3, "vpages")
    expected = []
    for key in ("a", "b/1", "b/2", "c"):
        ids = [s3.put_object(Bucket=b, Key=key, Body=key.encode() * i)["VersionId"] for i in (1, 2, 3)]
        expected += [(key, vid) for vid in reversed(ids)]
    marker = s3.delete_object(Bucket=b, Key="c")["VersionId"]
    expected.insert(len(expected) - 3, ("c", marker))
    seen, args = [], {}
    while True:
        page = s3.list_object_versions(Bucket=b, MaxKeys=2, **args)
        entries = sorted(page.get("Versions", []) + page.get("DeleteMarkers", []),
                         key=lambda e: expected.index((e["Key"], e["VersionId"])))
        seen += [(e["Key"], e["VersionId"]) for e in entries]
        if not page["IsTruncated"]:
            break
        args = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}
    assert seen == expected
    rolled = s3.list_object_versions(Bucket=b, Delimiter="/")
    assert [p["Prefix"] for p in rolled["CommonPrefixes"]] == ["b/"]
    assert {v["Key"] for v in rolled["Versions"]} == {"a", "c"}
    after_b = s3.list_object_versions(Bucket=b, KeyMarker="b/1")
    assert {v["Key"] for v in after_b["Versions"]} == {"b/2", "c"}
    latest = {(v["Key"], v["VersionId"]) for v in after_b["Versions"] if v["IsLatest"]}
    assert ("b/2", expected[6][1]) in latest


def collect_garbage(s3_stack) -> None:
    """One GC run as if the grace period were over, then fsck, which must find every version's chunks."""
    store = ObjectStore.from_settings(s3_stack.settings)
    try:
        store.garbage_collector().collect(now=time.time() + s3_stack.settings.gc_grace_s + 60)
        report = store.fsck().run()
        assert report.missing.count == 0 and report.corrupt.count == 0, report
    finally:
        store.meta.client.close()


def test_new_version_stores_only_changed_chunks_and_gc_frees_only_unreferenced(s3_stack, s3):
    b = versioned(s3, "vdedup")
    settle(s3_stack)
    collect_garbage(s3_stack)  # what earlier tests deleted is gone before this one counts
    chunk = s3_stack.settings.chunk_size
    v1_bytes = random_bytes(4 * MiB, seed=1801)
    v2_bytes = v1_bytes[:2 * chunk] + random_bytes(chunk, seed=1802) + v1_bytes[3 * chunk:]
    s3.put_object(Bucket=b, Key="big", Body=v1_bytes)
    settle(s3_stack)
    before = set(s3_stack.chunk_files())
    v2 = s3.put_object(Bucket=b, Key="big", Body=v2_bytes)["VersionId"]
    settle(s3_stack)
    k, m = s3_stack.settings.ec_layout
    added = set(s3_stack.chunk_files()) - before
    changed = hashlib.sha256(v2_bytes[2 * chunk:3 * chunk]).hexdigest()
    assert len(added) == k + m and all(changed in Path(p).name for p in added)

    v1 = [v for v in s3.list_object_versions(Bucket=b)["Versions"] if not v["IsLatest"]][0]["VersionId"]
    s3.delete_object(Bucket=b, Key="big", VersionId=v1)
    collect_garbage(s3_stack)
    freed = before - set(s3_stack.chunk_files())
    only_v1 = hashlib.sha256(v1_bytes[2 * chunk:3 * chunk]).hexdigest()
    assert len(freed) == k + m and all(only_v1 in Path(p).name for p in freed)
    assert s3.get_object(Bucket=b, Key="big", VersionId=v2)["Body"].read() == v2_bytes
    assert s3.get_object(Bucket=b, Key="big")["Body"].read() == v2_bytes

    s3.delete_object(Bucket=b, Key="big", VersionId=v2)  # the last version: everything goes
    collect_garbage(s3_stack)
    left = {Path(p).name.split(".")[0] for p in s3_stack.chunk_files()}
    ours = {hashlib.sha256(data[at:at + chunk]).hexdigest() for data in (v1_bytes, v2_bytes)
            for at in range(0, len(data), chunk)}
    assert not left & ours


def test_version_documents_keep_the_current_object_in_objects(s3_stack, s3):
    b = versioned(s3, "vdocs")
    vid = s3.put_object(Bucket=b, Key="k", Body=b"x")["VersionId"]
    with s3_stack.metadata() as meta:
        current = meta.db.objects.find_one({"_id": name_id(b, "k")})
        assert current["versionId"] == vid
        version = meta.versions.get(name_id(b, "k") + "\x00" + vid)
        assert version["file"] == current["file"] and version["key"] == "k"


def test_lifecycle_expires_noncurrent_versions_and_lone_delete_markers(s3_stack, s3):
    b = versioned(s3, "vlife")
    ids = [s3.put_object(Bucket=b, Key="logs/a", Body=f"a{i}".encode())["VersionId"] for i in range(4)]
    s3.delete_object(Bucket=b, Key="logs/gone")  # a delete marker and nothing under it
    s3.put_object(Bucket=b, Key="logs/kept", Body=b"k")
    s3.delete_object(Bucket=b, Key="logs/kept")  # a marker over the one noncurrent version kept
    s3.put_object(Bucket=b, Key="other", Body=b"o1")
    s3.put_object(Bucket=b, Key="other", Body=b"o2")
    s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
        {"ID": "old-logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
         "NoncurrentVersionExpiration": {"NoncurrentDays": 1, "NewerNoncurrentVersions": 1}},
        {"ID": "markers", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
         "Expiration": {"ExpiredObjectDeleteMarker": True}}]})
    store = ObjectStore.from_settings(s3_stack.settings)
    try:
        names = store.object_names()
        first = apply_lifecycle(names, day_s=1.0, batch=100, now=time.time() + 10)
        second = apply_lifecycle(names, day_s=1.0, batch=100, now=time.time() + 10)
    finally:
        store.meta.client.close()
    assert first["expired"] == 3 and second["expired"] == 0
    listing = s3.list_object_versions(Bucket=b)
    assert [(v["Key"], v["VersionId"]) for v in listing["Versions"] if v["Key"] == "logs/a"] == [
        ("logs/a", ids[3]), ("logs/a", ids[2])]  # the current one and one newer noncurrent kept
    assert "logs/gone" not in {v["Key"] for v in listing["Versions"] + listing["DeleteMarkers"]}
    assert [m["Key"] for m in listing["DeleteMarkers"]] == ["logs/kept"]
    assert len([v for v in listing["Versions"] if v["Key"] == "other"]) == 2  # outside the rules' prefix
    assert s3.get_object(Bucket=b, Key="logs/a", VersionId=ids[2])["Body"].read() == b"a2"


def test_aws_cli_lists_object_versions(s3_stack, s3_keys, s3, tmp_path):
    b = versioned(s3, "vcli")
    first = s3.put_object(Bucket=b, Key="f.txt", Body=b"1")["VersionId"]
    second = s3.put_object(Bucket=b, Key="f.txt", Body=b"22")["VersionId"]
    marker = s3.delete_object(Bucket=b, Key="f.txt")["VersionId"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": s3_keys[0], "AWS_SECRET_ACCESS_KEY": s3_keys[1],
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"), "HOME": str(tmp_path)}
    done = subprocess.run([str(BIN / "aws"), "--endpoint-url", s3_stack.s3_url, "s3api", "list-object-versions",
                           "--bucket", b], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [(v["VersionId"], v["IsLatest"], v["Size"]) for v in listed["Versions"]] == [
        (second, False, 2), (first, False, 1)]
    assert [(m["VersionId"], m["IsLatest"]) for m in listed["DeleteMarkers"]] == [(marker, True)]
    assert s3.get_object_acl(Bucket=b, Key="f.txt", VersionId=first)["Grants"]


def test_versions_that_each_change_one_chunk_add_one_chunk_each(s3_stack, s3):
    """The issue's promise, scaled down: six versions of an 8 MiB file, each changing one chunk."""
    b = versioned(s3, "vten")
    chunk = s3_stack.settings.chunk_size
    data = bytearray(random_bytes(8 * MiB, seed=1810))
    s3.put_object(Bucket=b, Key="big", Body=bytes(data))
    settle(s3_stack)
    before = set(s3_stack.chunk_files())
    bodies = []
    for i in range(1, 6):
        at = i * chunk
        data[at:at + chunk] = random_bytes(chunk, seed=1810 + i)
        bodies.append((s3.put_object(Bucket=b, Key="big", Body=bytes(data))["VersionId"], bytes(data)))
    settle(s3_stack)
    k, m = s3_stack.settings.ec_layout
    assert len(set(s3_stack.chunk_files()) - before) == 5 * (k + m)
    for vid, body in bodies:
        assert s3.get_object(Bucket=b, Key="big", VersionId=vid)["Body"].read() == body


def test_a_late_older_version_or_marker_never_replaces_a_newer_current_object(s3_stack, s3):
    """Two racing writes: the one whose version is newer ends current, whichever lands last."""
    b = versioned(s3, "vrace")
    vid = s3.put_object(Bucket=b, Key="k", Body=b"newest")["VersionId"]
    nid = name_id(b, "k")
    older = "9" * 19 + "000000"  # the order of a version written long before
    with s3_stack.metadata() as meta:
        current = meta.db.objects.find_one({"_id": nid})
        meta.versions.name_if_newer({**current, "order": older, "versionId": older, "file": "elsewhere"})
        meta.versions.unname_if_older(nid, older)
        assert meta.db.objects.find_one({"_id": nid})["versionId"] == vid
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"newest"


def test_racing_deletes_of_the_same_versions_leave_no_name_behind(s3_stack, s3):
    """Five clients send the same DeleteObjects of every version at once (what a backup tool's
    retries do): each version goes once, the keys end with no current object, no name points at a
    removed version's file, and the bucket can be deleted."""
    import threading

    for round_ in range(3):
        bucket = versioned(s3, f"vrace{round_}")
        keys = [f"key_{i}" for i in range(5)]
        for n in range(3):
            for k in keys:
                s3.put_object(Bucket=bucket, Key=k, Body=f"{k} v{n}".encode())
        versions = s3.list_object_versions(Bucket=bucket)["Versions"]
        assert len(versions) == 15
        objects = {"Objects": [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]}
        answers: list = []
        threads = [threading.Thread(target=lambda: answers.append(s3.delete_objects(Bucket=bucket, Delete=objects)))
                   for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(answers) == 5
        assert all(len(a["Deleted"]) == 15 and "Errors" not in a for a in answers)
        assert "Contents" not in s3.list_objects(Bucket=bucket)
        listed = s3.list_object_versions(Bucket=bucket)
        assert "Versions" not in listed and "DeleteMarkers" not in listed
        with s3_stack.metadata() as meta:
            assert meta.db.objects.count_documents({"bucket": bucket}) == 0
        s3.delete_bucket(Bucket=bucket)


@pytest.mark.parametrize("deletes", [0, 3], ids=["puts", "puts-and-deletes"])
def test_racing_writes_of_a_suspended_key_leave_one_null_version(s3_stack, s3, deletes):
    """Eight clients write one key of a Suspended bucket at once (some of them DELETE it): one
    ``null`` version is left, the current object is that version's, and every overtaken write's
    file is deleted (none leaks; the Enabled-time version written before stays)."""
    import threading

    for round_ in range(3):
        bucket = versioned(s3, f"nullrace-{deletes}-{round_}")
        s3.put_object(Bucket=bucket, Key="k", Body=b"before")
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})

        def write(i: int) -> None:
            if i < deletes:
                s3.delete_object(Bucket=bucket, Key="k")
            else:
                s3.put_object(Bucket=bucket, Key="k", Body=f"body {i}".encode())
        threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        listed = s3.list_object_versions(Bucket=bucket)
        nulls = [v for v in listed.get("Versions", []) + listed.get("DeleteMarkers", []) if v["VersionId"] == "null"]
        assert len(nulls) == 1, listed
        (null,) = nulls
        with s3_stack.metadata() as meta:
            live = meta.db.files.count_documents({"bucket": bucket, "key": "k", "status": {"$ne": "deleted"}})
            current = meta.db.objects.find_one({"_id": name_id(bucket, "k")})
        if "ETag" in null:  # a version: it is the current object, and the only file left
            assert null["IsLatest"] and current is not None and current["versionId"] == "null"
            assert s3.get_object(Bucket=bucket, Key="k")["ETag"] == null["ETag"]
            assert live == 2  # the null version's and the version written before
        else:  # a delete marker: no current object, only the version written before keeps a file
            assert current is None and live == 1
            assert failure(s3.get_object, Bucket=bucket, Key="k")[1] == 404
