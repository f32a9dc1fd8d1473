"""S3 Object Lock (WORM) through boto3 and aws-cli against gunicorn + celery worker: lock-enabled
buckets, Put/GetObjectLockConfiguration, Put/GetObjectRetention and Put/GetObjectLegalHold with
their errors (as ceph's s3-tests expect them), the lock headers of PutObject, CopyObject and
CreateMultipartUpload, the bucket's default retention, delete protection (DeleteObject,
DeleteObjects, the governance bypass), and what stays for good: lifecycle, operators' file deletes
and GC never remove a locked version or its chunks."""
from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from app.s3.lock import parse_date
from pipeline.errors import ObjectLocked
from pipeline.namespace.lifecycle import apply_lifecycle
from pipeline.store import ObjectStore
from pipeline.timefmt import iso8601
from tests.s3clients import boto3_client
from tests.stack import BIN, MiB, random_bytes, wait_for

FUTURE = datetime(2100, 1, 1, tzinfo=timezone.utc)
LATER = datetime(2100, 1, 3, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def s3(s3_stack, s3_keys):
    return boto3_client(s3_stack, s3_keys)


def failure(call, **kwargs) -> tuple[str, int]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    err = info.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def locked_bucket(s3, name: str) -> str:
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def governance(until: datetime = FUTURE) -> dict:
    return {"Mode": "GOVERNANCE", "RetainUntilDate": until}


def settle(s3_stack) -> None:
    with s3_stack.metadata() as meta:
        wait_for(lambda: meta.db.files.count_documents({"status": {"$in": ["queued", "processing"]}}) == 0,
                 what="every file ingested")


# --- buckets -----------------------------------------------------------------------------------

def test_a_lock_enabled_bucket_is_versioned_for_good(s3):
    b = locked_bucket(s3, "lock-create")
    assert s3.get_bucket_versioning(Bucket=b)["Status"] == "Enabled"
    assert s3.get_object_lock_configuration(Bucket=b)["ObjectLockConfiguration"] == {"ObjectLockEnabled": "Enabled"}
    assert failure(s3.put_bucket_versioning, Bucket=b, VersioningConfiguration={"Status": "Suspended"}) == \
        ("InvalidBucketState", 409)
    assert s3.get_bucket_versioning(Bucket=b)["Status"] == "Enabled"
    assert "VersionId" in s3.put_object(Bucket=b, Key="k", Body=b"x")


def test_lock_configuration_round_trips_and_replaces(s3):
    b = locked_bucket(s3, "lock-config")
    for conf in ({"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}},
                 {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 1}}}):
        assert s3.put_object_lock_configuration(Bucket=b, ObjectLockConfiguration=conf)[
            "ResponseMetadata"]["HTTPStatusCode"] == 200
        assert s3.get_object_lock_configuration(Bucket=b)["ObjectLockConfiguration"] == conf


def test_lock_configuration_errors_are_s3s(s3):
    b = locked_bucket(s3, "lock-config-errors")

    def put(**retention):
        conf = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": retention}}
        return failure(s3.put_object_lock_configuration, Bucket=b, ObjectLockConfiguration=conf)

    assert put(Mode="GOVERNANCE", Days=1, Years=1) == ("MalformedXML", 400)
    assert put(Mode="GOVERNANCE") == ("MalformedXML", 400)
    assert put(Mode="GOVERNANCE", Days=0) == ("InvalidRetentionPeriod", 400)
    assert put(Mode="GOVERNANCE", Years=-1) == ("InvalidRetentionPeriod", 400)
    assert put(Mode="abc", Years=1) == ("MalformedXML", 400)
    assert put(Mode="governance", Years=1) == ("MalformedXML", 400)
    assert failure(s3.put_object_lock_configuration, Bucket=b, ObjectLockConfiguration={
        "ObjectLockEnabled": "Disabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Years": 1}}}) == \
        ("MalformedXML", 400)
    assert s3.get_object_lock_configuration(Bucket=b)["ObjectLockConfiguration"] == {"ObjectLockEnabled": "Enabled"}


def test_lock_configuration_needs_versioning_enabled(s3):
    s3.create_bucket(Bucket="lock-later")
    conf = {"ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}}
    assert failure(s3.get_object_lock_configuration, Bucket="lock-later") == \
        ("ObjectLockConfigurationNotFoundError", 404)
    assert failure(s3.put_object_lock_configuration, Bucket="lock-later", ObjectLockConfiguration=conf) == \
        ("InvalidBucketState", 409)
    s3.put_bucket_versioning(Bucket="lock-later", VersioningConfiguration={"Status": "Suspended"})
    assert failure(s3.put_object_lock_configuration, Bucket="lock-later", ObjectLockConfiguration=conf) == \
        ("InvalidBucketState", 409)
    s3.put_bucket_versioning(Bucket="lock-later", VersioningConfiguration={"Status": "Enabled"})
    s3.put_object_lock_configuration(Bucket="lock-later", ObjectLockConfiguration=conf)
    assert s3.get_object_lock_configuration(Bucket="lock-later")["ObjectLockConfiguration"] == conf
    assert failure(s3.put_bucket_versioning, Bucket="lock-later", VersioningConfiguration={"Status": "Suspended"}) \
        == ("InvalidBucketState", 409)


def test_retention_and_legal_hold_need_a_lock_enabled_bucket(s3):
    s3.create_bucket(Bucket="lock-none")
    s3.put_object(Bucket="lock-none", Key="k", Body=b"abc")
    assert failure(s3.put_object_retention, Bucket="lock-none", Key="k", Retention=governance()) == \
        ("InvalidRequest", 400)
    assert failure(s3.get_object_retention, Bucket="lock-none", Key="k") == ("InvalidRequest", 400)
    assert failure(s3.put_object_legal_hold, Bucket="lock-none", Key="k", LegalHold={"Status": "ON"}) == \
        ("InvalidRequest", 400)
    assert failure(s3.get_object_legal_hold, Bucket="lock-none", Key="k") == ("InvalidRequest", 400)
    assert failure(s3.put_object, Bucket="lock-none", Key="k2", Body=b"x", ObjectLockLegalHoldStatus="ON") == \
        ("InvalidRequest", 400)


# --- retention and legal hold ------------------------------------------------------------------

@pytest.mark.parametrize("sent", ["2030-01-01T00:00:00Z", "2027-12-03T09:40:12.345678Z",
                                  "2027-12-03T09:40:12.3456+02:00", "2100-01-01T00:00:00.999Z"])
def test_a_retain_until_date_read_back_and_sent_again_is_the_same_date(sent):
    """Dates are kept to the millisecond an answer shows: resending what GetObjectRetention said is
    never a shortening."""
    kept = parse_date(sent)
    assert parse_date(iso8601(kept)) == kept
    assert parse_date("yesterday") is None


def test_retention_round_trips_by_version_and_shows_on_head(s3):
    b = locked_bucket(s3, "lock-retention")
    first = s3.put_object(Bucket=b, Key="k", Body=b"one")["VersionId"]
    second = s3.put_object(Bucket=b, Key="k", Body=b"two")["VersionId"]
    assert failure(s3.get_object_retention, Bucket=b, Key="k") == ("NoSuchObjectLockConfiguration", 404)
    s3.put_object_retention(Bucket=b, Key="k", VersionId=first, Retention=governance())
    assert s3.get_object_retention(Bucket=b, Key="k", VersionId=first)["Retention"] == governance()
    assert failure(s3.get_object_retention, Bucket=b, Key="k", VersionId=second) == \
        ("NoSuchObjectLockConfiguration", 404)
    head = s3.head_object(Bucket=b, Key="k", VersionId=first)
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]) == ("GOVERNANCE", FUTURE)
    assert "ObjectLockMode" not in s3.head_object(Bucket=b, Key="k")
    s3.put_object_retention(Bucket=b, Key="k", Retention=governance(LATER))  # the current version
    assert s3.get_object(Bucket=b, Key="k")["ObjectLockRetainUntilDate"] == LATER
    assert failure(s3.put_object_retention, Bucket=b, Key="k",
                   Retention={"Mode": "governance", "RetainUntilDate": FUTURE}) == ("MalformedXML", 400)
    assert failure(s3.put_object_retention, Bucket=b, Key="k",
                   Retention=governance(datetime(2001, 1, 1, tzinfo=timezone.utc))) == ("InvalidArgument", 400)
    assert failure(s3.put_object_retention, Bucket=b, Key="missing", Retention=governance()) == ("NoSuchKey", 404)


def test_retention_extends_freely_and_shortens_only_in_governance_with_the_bypass(s3):
    b = locked_bucket(s3, "lock-change")
    vid = s3.put_object(Bucket=b, Key="g", Body=b"g")["VersionId"]
    s3.put_object_retention(Bucket=b, Key="g", Retention=governance(FUTURE))
    s3.put_object_retention(Bucket=b, Key="g", Retention=governance(LATER))
    assert failure(s3.put_object_retention, Bucket=b, Key="g", Retention=governance(FUTURE)) == \
        ("AccessDenied", 403)
    assert failure(s3.put_object_retention, Bucket=b, Key="g",
                   Retention={"Mode": "COMPLIANCE", "RetainUntilDate": LATER}) == ("AccessDenied", 403)
    s3.put_object_retention(Bucket=b, Key="g", Retention=governance(FUTURE), BypassGovernanceRetention=True)
    assert s3.get_object_retention(Bucket=b, Key="g")["Retention"] == governance(FUTURE)
    s3.put_object_retention(Bucket=b, Key="g", Retention={"Mode": "COMPLIANCE", "RetainUntilDate": FUTURE},
                            BypassGovernanceRetention=True)
    for mode, until in (("GOVERNANCE", LATER), ("COMPLIANCE", datetime(2099, 1, 1, tzinfo=timezone.utc))):
        assert failure(s3.put_object_retention, Bucket=b, Key="g", BypassGovernanceRetention=True,
                       Retention={"Mode": mode, "RetainUntilDate": until}) == ("AccessDenied", 403)
    s3.put_object_retention(Bucket=b, Key="g", Retention={"Mode": "COMPLIANCE", "RetainUntilDate": LATER})
    assert s3.get_object_retention(Bucket=b, Key="g", VersionId=vid)["Retention"]["Mode"] == "COMPLIANCE"


def test_legal_hold_round_trips_and_refuses_other_values(s3):
    b = locked_bucket(s3, "lock-hold")
    s3.put_object(Bucket=b, Key="k", Body=b"abc")
    assert failure(s3.get_object_legal_hold, Bucket=b, Key="k") == ("NoSuchObjectLockConfiguration", 404)
    for status in ("ON", "OFF"):
        assert s3.put_object_legal_hold(Bucket=b, Key="k", LegalHold={"Status": status})[
            "ResponseMetadata"]["HTTPStatusCode"] == 200
        assert s3.get_object_legal_hold(Bucket=b, Key="k")["LegalHold"] == {"Status": status}
        assert s3.head_object(Bucket=b, Key="k")["ObjectLockLegalHoldStatus"] == status
    assert failure(s3.put_object_legal_hold, Bucket=b, Key="k", LegalHold={"Status": "abc"}) == \
        ("MalformedXML", 400)


# --- protection --------------------------------------------------------------------------------

def test_a_version_under_governance_is_deleted_only_with_the_bypass_and_a_marker_always(s3):
    b = locked_bucket(s3, "lock-del-gov")
    vid = s3.put_object(Bucket=b, Key="k", Body=b"abc")["VersionId"]
    s3.put_object_retention(Bucket=b, Key="k", Retention=governance())
    marker = s3.delete_object(Bucket=b, Key="k")
    assert marker["DeleteMarker"] is True
    assert failure(s3.delete_object, Bucket=b, Key="k", VersionId=vid) == ("AccessDenied", 403)
    s3.delete_object(Bucket=b, Key="k", VersionId=marker["VersionId"])  # a marker is never locked
    assert failure(s3.delete_object, Bucket=b, Key="k", VersionId=vid) == ("AccessDenied", 403)
    assert s3.get_object(Bucket=b, Key="k")["Body"].read() == b"abc"
    assert s3.delete_object(Bucket=b, Key="k", VersionId=vid, BypassGovernanceRetention=True)[
        "ResponseMetadata"]["HTTPStatusCode"] == 204
    assert failure(s3.head_object, Bucket=b, Key="k", VersionId=vid)[1] == 404


def test_a_version_under_compliance_or_legal_hold_is_never_deleted(s3):
    b = locked_bucket(s3, "lock-del-comp")
    comp = s3.put_object(Bucket=b, Key="c", Body=b"c", ObjectLockMode="COMPLIANCE",
                         ObjectLockRetainUntilDate=FUTURE)["VersionId"]
    hold = s3.put_object(Bucket=b, Key="h", Body=b"h", ObjectLockLegalHoldStatus="ON")["VersionId"]
    for key, vid in (("c", comp), ("h", hold)):
        for bypass in (False, True):
            assert failure(s3.delete_object, Bucket=b, Key=key, VersionId=vid,
                           BypassGovernanceRetention=bypass) == ("AccessDenied", 403)
    s3.put_object_legal_hold(Bucket=b, Key="h", LegalHold={"Status": "OFF"})
    assert s3.delete_object(Bucket=b, Key="h", VersionId=hold)["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.get_object(Bucket=b, Key="c", VersionId=comp)["Body"].read() == b"c"
    assert failure(s3.delete_bucket, Bucket=b) == ("BucketNotEmpty", 409)


def test_delete_objects_refuses_locked_versions_key_by_key(s3):
    b = locked_bucket(s3, "lock-multi")
    v1 = s3.put_object(Bucket=b, Key="file1", Body=b"abc")["VersionId"]
    v2 = s3.put_object(Bucket=b, Key="file2", Body=b"abc")["VersionId"]
    s3.put_object_retention(Bucket=b, Key="file1", Retention=governance())
    answer = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "file1", "VersionId": v1},
                                                             {"Key": "file2", "VersionId": v2}]})
    assert [(e["Key"], e["VersionId"], e["Code"]) for e in answer["Errors"]] == [("file1", v1, "AccessDenied")]
    assert [(d["Key"], d["VersionId"]) for d in answer["Deleted"]] == [("file2", v2)]
    answer = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "file1", "VersionId": v1}]},
                               BypassGovernanceRetention=True)
    assert not answer.get("Errors") and [(d["Key"], d["VersionId"]) for d in answer["Deleted"]] == [("file1", v1)]


def test_a_delete_decided_before_a_legal_hold_was_set_removes_nothing(s3_stack, s3):
    """The removal of a version is a compare-and-set on its lock: a PutObjectLegalHold (or
    PutObjectRetention) that lands between a delete's read and its write wins."""
    b = locked_bucket(s3, "lock-race")
    vid = s3.put_object(Bucket=b, Key="k", Body=b"abc")["VersionId"]
    with s3_stack.metadata() as meta:
        stale = meta.versions.get(f"{b}/k\x00{vid}")  # what a delete read: no lock yet
        s3.put_object_legal_hold(Bucket=b, Key="k", LegalHold={"Status": "ON"})
        assert meta.versions.delete_if_lock_unchanged(stale) is None
        fresh = meta.versions.get(f"{b}/k\x00{vid}")
        assert fresh["legalHold"]  # True (the stand-in reads a boolean written by $set back as 1)
        s3.put_object_legal_hold(Bucket=b, Key="k", LegalHold={"Status": "OFF"})
        assert meta.versions.delete_if_lock_unchanged(fresh) is None  # changed again since
    assert s3.get_object(Bucket=b, Key="k", VersionId=vid)["Body"].read() == b"abc"


def test_another_tenant_needs_the_lock_permissions_a_policy_grants(s3_stack, s3):
    b = locked_bucket(s3, "lock-policy")
    globex = boto3_client(s3_stack, s3_stack.s3_credentials("globex"))

    def allow(*actions: str) -> None:
        s3.put_bucket_policy(Bucket=b, Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": "globex"}, "Action": list(actions),
            "Resource": f"arn:aws:s3:::{b}/*"}]}))

    allow("s3:PutObject", "s3:DeleteObject")
    assert failure(globex.put_object, Bucket=b, Key="k", Body=b"x", ObjectLockLegalHoldStatus="ON") == \
        ("AccessDenied", 403)
    assert failure(globex.put_object, Bucket=b, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                   ObjectLockRetainUntilDate=FUTURE) == ("AccessDenied", 403)
    allow("s3:PutObject", "s3:DeleteObject", "s3:PutObjectRetention")
    vid = globex.put_object(Bucket=b, Key="k", Body=b"x", ObjectLockMode="GOVERNANCE",
                            ObjectLockRetainUntilDate=FUTURE)["VersionId"]
    assert failure(globex.delete_object, Bucket=b, Key="k", VersionId=vid, BypassGovernanceRetention=True) == \
        ("AccessDenied", 403)  # the bypass needs s3:BypassGovernanceRetention too
    allow("s3:PutObject", "s3:DeleteObject", "s3:BypassGovernanceRetention")
    assert globex.delete_object(Bucket=b, Key="k", VersionId=vid, BypassGovernanceRetention=True)[
        "ResponseMetadata"]["HTTPStatusCode"] == 204


# --- headers on writes, default retention --------------------------------------------------------

def test_lock_headers_on_put_are_kept_and_returned(s3):
    b = locked_bucket(s3, "lock-put")
    s3.put_object(Bucket=b, Key="k", Body=b"abc", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=FUTURE,
                  ObjectLockLegalHoldStatus="ON")
    head = s3.head_object(Bucket=b, Key="k")
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"], head["ObjectLockLegalHoldStatus"]) == \
        ("GOVERNANCE", FUTURE, "ON")
    assert failure(s3.put_object, Bucket=b, Key="k2", Body=b"x", ObjectLockMode="GOVERNANCE") == \
        ("InvalidArgument", 400)
    assert failure(s3.put_object, Bucket=b, Key="k2", Body=b"x", ObjectLockRetainUntilDate=FUTURE) == \
        ("InvalidArgument", 400)
    assert failure(s3.put_object, Bucket=b, Key="k2", Body=b"x", ObjectLockMode="FOREVER",
                   ObjectLockRetainUntilDate=FUTURE) == ("InvalidArgument", 400)
    assert failure(s3.put_object, Bucket=b, Key="k2", Body=b"x", ObjectLockLegalHoldStatus="MAYBE") == \
        ("InvalidArgument", 400)
    assert failure(s3.put_object, Bucket=b, Key="k2", Body=b"x", ObjectLockMode="GOVERNANCE",
                   ObjectLockRetainUntilDate=datetime(2001, 1, 1, tzinfo=timezone.utc)) == ("InvalidArgument", 400)


def test_copy_takes_its_own_lock_headers_never_the_sources(s3):
    b = locked_bucket(s3, "lock-copy")
    s3.put_object(Bucket=b, Key="src", Body=b"abc", ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=FUTURE)
    plain = s3.copy_object(Bucket=b, Key="plain", CopySource=f"{b}/src")
    assert "ObjectLockMode" not in s3.head_object(Bucket=b, Key="plain")
    s3.delete_object(Bucket=b, Key="plain", VersionId=plain["VersionId"])
    held = s3.copy_object(Bucket=b, Key="held", CopySource=f"{b}/src", ObjectLockLegalHoldStatus="ON",
                          ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=LATER)
    head = s3.head_object(Bucket=b, Key="held")
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"], head["ObjectLockLegalHoldStatus"]) == \
        ("GOVERNANCE", LATER, "ON")
    assert failure(s3.delete_object, Bucket=b, Key="held", VersionId=held["VersionId"],
                   BypassGovernanceRetention=True) == ("AccessDenied", 403)


def test_multipart_upload_takes_lock_headers_at_creation(s3):
    b = locked_bucket(s3, "lock-mpu")
    for headers in ({"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": FUTURE},
                    {"ObjectLockLegalHoldStatus": "ON"}):
        upload = s3.create_multipart_upload(Bucket=b, Key="k", **headers)["UploadId"]
        etag = s3.upload_part(Bucket=b, Key="k", UploadId=upload, PartNumber=1, Body=b"abc")["ETag"]
        done = s3.complete_multipart_upload(Bucket=b, Key="k", UploadId=upload,
                                            MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]})
        assert failure(s3.delete_object, Bucket=b, Key="k", VersionId=done["VersionId"]) == ("AccessDenied", 403)
    head = s3.head_object(Bucket=b, Key="k")
    assert head["ObjectLockLegalHoldStatus"] == "ON" and "ObjectLockMode" not in head


def test_default_retention_applies_to_new_versions_without_a_mode(s3):
    b = locked_bucket(s3, "lock-default")
    s3.put_object_lock_configuration(Bucket=b, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 2}}})
    before = datetime.now(timezone.utc)
    vid = s3.put_object(Bucket=b, Key="k", Body=b"abc")["VersionId"]
    retention = s3.get_object_retention(Bucket=b, Key="k", VersionId=vid)["Retention"]
    assert retention["Mode"] == "COMPLIANCE"
    assert timedelta(days=2) - timedelta(seconds=5) < retention["RetainUntilDate"] - before < \
        timedelta(days=2, seconds=60)
    s3.put_object(Bucket=b, Key="own", Body=b"x", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=FUTURE)
    assert s3.get_object_retention(Bucket=b, Key="own")["Retention"] == governance()
    copied = s3.copy_object(Bucket=b, Key="copied", CopySource=f"{b}/k")["VersionId"]
    assert s3.get_object_retention(Bucket=b, Key="copied", VersionId=copied)["Retention"]["Mode"] == "COMPLIANCE"
    assert failure(s3.delete_object, Bucket=b, Key="k", VersionId=vid, BypassGovernanceRetention=True) == \
        ("AccessDenied", 403)


# --- what stays for good: lifecycle, operators, GC -----------------------------------------------

def test_lifecycle_never_removes_a_locked_version(s3_stack, s3):
    b = locked_bucket(s3, "lock-life")
    locked = s3.put_object(Bucket=b, Key="logs/a", Body=b"a0", ObjectLockMode="GOVERNANCE",
                           ObjectLockRetainUntilDate=FUTURE)["VersionId"]
    held = s3.put_object(Bucket=b, Key="logs/a", Body=b"a1", ObjectLockLegalHoldStatus="ON")["VersionId"]
    free = s3.put_object(Bucket=b, Key="logs/a", Body=b"a2")["VersionId"]
    current = s3.put_object(Bucket=b, Key="logs/a", Body=b"a3")["VersionId"]
    s3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
        {"ID": "old", "Filter": {"Prefix": "logs/"}, "Status": "Enabled",
         "NoncurrentVersionExpiration": {"NoncurrentDays": 1}, "Expiration": {"Days": 1}}]})
    store = ObjectStore.from_settings(s3_stack.settings)
    try:
        apply_lifecycle(store.object_names(), day_s=1.0, batch=100, now=time.time() + 10)
    finally:
        store.meta.client.close()
    listing = s3.list_object_versions(Bucket=b)
    # the expiration wrote a marker over the current version, which became noncurrent and went with
    # the free one; the locked and the held versions stay
    assert [m["IsLatest"] for m in listing["DeleteMarkers"]] == [True]
    assert {v["VersionId"] for v in listing["Versions"]} == {locked, held}
    assert not {free, current} & {v["VersionId"] for v in listing["Versions"]}
    assert s3.get_object(Bucket=b, Key="logs/a", VersionId=locked)["Body"].read() == b"a0"
    assert s3.get_object(Bucket=b, Key="logs/a", VersionId=held)["Body"].read() == b"a1"


def test_gc_and_operator_deletes_keep_a_locked_versions_file_and_chunks(s3_stack, s3):
    b = locked_bucket(s3, "lock-gc")
    data = random_bytes(3 * MiB, seed=4242)
    vid = s3.put_object(Bucket=b, Key="big", Body=data, ObjectLockMode="COMPLIANCE",
                        ObjectLockRetainUntilDate=FUTURE)["VersionId"]
    s3.put_object(Bucket=b, Key="big", Body=b"small")  # the locked version is noncurrent now
    s3.delete_object(Bucket=b, Key="big")  # and under a delete marker
    settle(s3_stack)
    store = ObjectStore.from_settings(s3_stack.settings)
    try:
        doc = store.meta.versions.get(f"{b}/big\x00{vid}")
        with pytest.raises(ObjectLocked):  # what DELETE /api/files/<id> calls
            store.delete("acme", doc["file"])
        assert store.meta.files.get_file(doc["file"]).status == "stored"
        store.garbage_collector().collect(now=time.time() + store.settings.gc_grace_s + 365 * 86400)
    finally:
        store.meta.client.close()
    assert s3.get_object(Bucket=b, Key="big", VersionId=vid)["Body"].read() == data


def test_aws_cli_puts_and_gets_retention_and_legal_hold(s3_stack, s3_keys, s3, tmp_path):
    b = locked_bucket(s3, "lock-cli")
    vid = s3.put_object(Bucket=b, Key="f.txt", Body=b"1")["VersionId"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": s3_keys[0], "AWS_SECRET_ACCESS_KEY": s3_keys[1],
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"), "HOME": str(tmp_path)}

    def aws(*args: str) -> dict:
        done = subprocess.run([str(BIN / "aws"), "--endpoint-url", s3_stack.s3_url, "s3api", *args,
                               "--bucket", b], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else {}

    aws("put-object-retention", "--key", "f.txt", "--version-id", vid,
        "--retention", '{"Mode": "GOVERNANCE", "RetainUntilDate": "2100-01-01T00:00:00Z"}')
    assert aws("get-object-retention", "--key", "f.txt")["Retention"]["Mode"] == "GOVERNANCE"
    aws("put-object-legal-hold", "--key", "f.txt", "--legal-hold", "Status=ON")
    assert aws("get-object-legal-hold", "--key", "f.txt")["LegalHold"] == {"Status": "ON"}
    assert aws("get-object-lock-configuration")["ObjectLockConfiguration"] == {"ObjectLockEnabled": "Enabled"}
    assert failure(s3.delete_object, Bucket=b, Key="f.txt", VersionId=vid) == ("AccessDenied", 403)
