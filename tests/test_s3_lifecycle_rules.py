"""Bucket lifecycle configurations (Put/Get/DeleteBucketLifecycleConfiguration) through boto3 and
signed raw requests, and their rules applied by beat with a one-second lifecycle day
(MINIS3_LIFECYCLE_DAY_S=1): each rule removes exactly what it should, every run is recorded, GC
then reclaims what only expired objects used; and, in-process, the bounded walk of a bucket."""
from __future__ import annotations

import base64
import hashlib
import math
import re
import time
from collections import Counter
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests
from botocore.exceptions import ClientError

from pipeline.namespace.lifecycle import CONFIG, EVENT, apply_lifecycle, parse_rules, rules_to_mongo
from pipeline.namespace.objects import ObjectAttributes
from pipeline.store import ObjectStore
from tests.s3clients import boto3_client, sign
from tests.stack import MiB, Stack, random_bytes, wait_for


@pytest.fixture(scope="module")
def beat_stack(tmp_path_factory, backends):
    s = Stack(tmp_path_factory.mktemp("lifecycle"), backends, s3=True, beat=True, lifecycle_day_s=1.0,
              lifecycle_interval_s=1.0)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def keys(beat_stack):
    return beat_stack.s3_credentials("acme")


@pytest.fixture(scope="module")
def s3(beat_stack, keys):
    return boto3_client(beat_stack, keys)


def failure(call, **kwargs) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    err = info.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"].get("Message", "")


def raw_put(stack, keys, bucket: str, body: bytes, headers: dict | None = None) -> requests.Response:
    url = f"{stack.s3_url}/{bucket}?lifecycle"
    signed = sign("PUT", url, keys, headers=headers, body=body)
    return requests.put(url, data=body, headers=signed.headers, timeout=30)


def keys_of(s3, bucket: str) -> set[str]:
    return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def runs(stack) -> list[dict]:
    with stack.metadata() as meta:
        return meta.operations.event_history(EVENT, 1000)


def completed_pass_since(stack, bucket: str, since: float) -> bool:
    """A recorded run that started after ``since`` and walked the whole bucket."""
    return any(r["started"] > since and bucket in r["completed"] for r in runs(stack))


# --- the configuration ---------------------------------------------------------------------------

def test_configuration_round_trips_is_replaced_and_deleted(beat_stack, keys, s3):
    s3.create_bucket(Bucket="config")
    assert failure(s3.get_bucket_lifecycle_configuration, Bucket="config")[:2] == \
        ("NoSuchLifecycleConfiguration", 404)
    rules = [
        {"ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 30}},
        {"ID": "tagged", "Filter": {"And": {"Prefix": "t/", "Tags": [{"Key": "a", "Value": "1"}],
                                            "ObjectSizeGreaterThan": 10}},
         "Status": "Disabled", "Expiration": {"Days": 7},
         "Transitions": [{"Days": 40, "StorageClass": "GLACIER"}]},
        {"ID": "uploads", "Filter": {}, "Status": "Enabled",
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 3},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 5, "NewerNoncurrentVersions": 2},
         "Expiration": {"ExpiredObjectDeleteMarker": True}},
    ]
    s3.put_bucket_lifecycle_configuration(Bucket="config", LifecycleConfiguration={"Rules": rules})
    got = s3.get_bucket_lifecycle_configuration(Bucket="config")["Rules"]
    assert got == rules
    s3.put_bucket_lifecycle_configuration(Bucket="config", LifecycleConfiguration={"Rules": [
        {"ID": "dated", "Filter": {"Prefix": ""}, "Status": "Enabled",
         "Expiration": {"Date": "2030-01-01T00:00:00Z"}}]})
    got = s3.get_bucket_lifecycle_configuration(Bucket="config")["Rules"]
    assert [r["ID"] for r in got] == ["dated"]
    assert got[0]["Expiration"]["Date"].isoformat() == "2030-01-01T00:00:00+00:00"
    assert s3.delete_bucket_lifecycle(Bucket="config")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert failure(s3.get_bucket_lifecycle_configuration, Bucket="config")[:2] == \
        ("NoSuchLifecycleConfiguration", 404)
    other = boto3_client(beat_stack, beat_stack.s3_credentials("globex"))
    assert failure(other.put_bucket_lifecycle_configuration, Bucket="config",
                   LifecycleConfiguration={"Rules": rules})[:2] == ("AccessDenied", 403)


def test_faulty_configurations_get_aws_errors_and_change_nothing(beat_stack, keys, s3):
    s3.create_bucket(Bucket="faulty")
    good = {"Rules": [{"ID": "keep", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 9}}]}
    s3.put_bucket_lifecycle_configuration(Bucket="faulty", LifecycleConfiguration=good)
    for config, expected in (
            ({"Rules": [{"ID": "a", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 0}}]},
             ("InvalidArgument", 400, "'Days' for Expiration action must be a positive integer")),
            ({"Rules": [{"ID": "a", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 1}},
                        {"ID": "a", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 2}}]},
             ("InvalidArgument", 400, "Rule ID must be unique. Found same ID for more than one rule")),
            ({"Rules": [{"ID": "a", "Filter": {"Tag": {"Key": "k", "Value": "v"}}, "Status": "Enabled",
                         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]},
             ("InvalidRequest", 400, "AbortIncompleteMultipartUpload cannot be specified with Tags.")),
            ({"Rules": [{"ID": "a", "Filter": {}, "Status": "Enabled"}]},
             ("InvalidRequest", 400, "At least one action needs to be specified in a rule"))):
        assert failure(s3.put_bucket_lifecycle_configuration, Bucket="faulty",
                       LifecycleConfiguration=config) == expected
    for body in (b"<not-xml", b"<LifecycleConfiguration/>",
                 b"<LifecycleConfiguration><Rule><Status>On</Status><Filter/><Expiration><Days>1</Days>"
                 b"</Expiration></Rule></LifecycleConfiguration>",
                 b"<LifecycleConfiguration><Rule><Status>Enabled</Status><Filter/><Expiration><Days>1</Days>"
                 b"</Expiration><Colour>red</Colour></Rule></LifecycleConfiguration>"):
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        r = raw_put(beat_stack, keys, "faulty", body, {"Content-MD5": md5})
        assert r.status_code == 400 and "<Code>MalformedXML</Code>" in r.text, body
    body = (b"<LifecycleConfiguration><Rule><ID>md5</ID><Filter><Prefix>p/</Prefix></Filter><Status>Enabled</Status>"
            b"<Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>")
    r = raw_put(beat_stack, keys, "faulty", body)  # neither Content-MD5 nor a checksum
    assert r.status_code == 400 and "<Code>InvalidRequest</Code>" in r.text and "Content-MD5" in r.text
    assert s3.get_bucket_lifecycle_configuration(Bucket="faulty")["Rules"][0]["ID"] == "keep"
    r = raw_put(beat_stack, keys, "faulty", body, {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode()})
    assert r.status_code == 200, r.text
    assert s3.get_bucket_lifecycle_configuration(Bucket="faulty")["Rules"][0]["ID"] == "md5"


# --- the rules applied by beat -------------------------------------------------------------------

RULES = [
    {"ID": "logs", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 1}},
    {"ID": "temp", "Filter": {"Tag": {"Key": "class", "Value": "temp"}}, "Status": "Enabled",
     "Expiration": {"Days": 1}},
    {"ID": "big", "Filter": {"And": {"Prefix": "size/", "ObjectSizeGreaterThan": 1000}}, "Status": "Enabled",
     "Expiration": {"Days": 1}},
    {"ID": "dated", "Filter": {"Prefix": "dated/"}, "Status": "Enabled",
     "Expiration": {"Date": "2020-01-01T00:00:00Z"}},
    {"ID": "off", "Filter": {"Prefix": "off/"}, "Status": "Disabled", "Expiration": {"Days": 1}},
    {"ID": "young", "Filter": {"Prefix": "young/"}, "Status": "Enabled", "Expiration": {"Days": 3600}},
    {"ID": "uploads", "Filter": {}, "Status": "Enabled", "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 300}},
]


def test_each_rule_removes_exactly_what_it_matches_and_each_run_is_recorded(beat_stack, s3):
    s3.create_bucket(Bucket="rules")
    doomed = {"logs/a": b"a", "logs/b": b"b", "tmp1": b"t", "size/big": b"B" * 2000, "dated/x": b"d"}
    kept = {"other/logs-not": b"o", "keep1": b"k", "size/small": b"s" * 10, "off/x": b"x", "young/x": b"y"}
    for key, body in {**doomed, **kept}.items():
        tagging = "class=temp" if key == "tmp1" else "class=keep" if key == "keep1" else ""
        s3.put_object(Bucket="rules", Key=key, Body=body, Tagging=tagging)
    old = s3.create_multipart_upload(Bucket="rules", Key="up/old")["UploadId"]
    fresh = s3.create_multipart_upload(Bucket="rules", Key="up/fresh")["UploadId"]
    with beat_stack.metadata() as meta:  # initiated 1,000 lifecycle days (seconds) ago
        meta.db.uploads.update_one({"_id": old}, {"$set": {"created": time.time() - 1000}})
    s3.put_bucket_lifecycle_configuration(Bucket="rules", LifecycleConfiguration={"Rules": RULES})
    wait_for(lambda: keys_of(s3, "rules") == set(kept), timeout=90, what="the matching objects expired")
    gone = time.time()
    wait_for(lambda: completed_pass_since(beat_stack, "rules", gone), timeout=60, what="one more whole run")
    assert keys_of(s3, "rules") == set(kept)
    for key, body in kept.items():
        assert s3.get_object(Bucket="rules", Key=key)["Body"].read() == body
    uploads = {u["UploadId"] for u in s3.list_multipart_uploads(Bucket="rules").get("Uploads", [])}
    assert uploads == {fresh}
    expired, aborted = Counter(), Counter()
    for run in runs(beat_stack):
        for entry in run["rules"]:
            if entry["bucket"] == "rules":
                expired[entry["rule"]] += entry["expired"]
                aborted[entry["rule"]] += entry["aborted"]
    assert +expired == Counter({"logs": 2, "temp": 1, "big": 1, "dated": 1})
    assert +aborted == Counter({"uploads": 1})


def test_gc_reclaims_what_only_expired_objects_used_and_keeps_a_shared_chunk(beat_stack, s3):
    only_expired, shared, only_kept = (random_bytes(MiB, seed) for seed in (901, 902, 903))
    s3.create_bucket(Bucket="dedup")
    s3.put_object(Bucket="dedup", Key="gone/x", Body=only_expired + shared)
    s3.put_object(Bucket="dedup", Key="kept/y", Body=shared + only_kept)
    store = ObjectStore.from_settings(beat_stack.settings)
    store.prepare()
    try:
        wait_for(lambda: store.meta.db.files.count_documents({"status": {"$in": ["queued", "processing"]}}) == 0,
                 timeout=120, what="both objects ingested")

        def on_nodes() -> set[str]:
            return {Path(p).name.partition(".")[0] for p in beat_stack.chunk_files()}

        digest = {name: hashlib.sha256(data).hexdigest() for name, data in
                  (("expired", only_expired), ("shared", shared), ("kept", only_kept))}
        assert set(digest.values()) <= on_nodes()
        s3.put_bucket_lifecycle_configuration(Bucket="dedup", LifecycleConfiguration={"Rules": [
            {"ID": "gone", "Filter": {"Prefix": "gone/"}, "Status": "Enabled", "Expiration": {"Days": 1}}]})
        wait_for(lambda: keys_of(s3, "dedup") == {"kept/y"}, timeout=90, what="gone/x expired")
        report = store.garbage_collector().collect(now=time.time() + store.settings.gc_grace_s + 1)
        assert report["chunks"] >= 1
        left = on_nodes()
        assert digest["expired"] not in left
        assert {digest["shared"], digest["kept"]} <= left
        assert s3.get_object(Bucket="dedup", Key="kept/y")["Body"].read() == shared + only_kept
    finally:
        store.meta.client.close()


# --- the walk, in-process: bounded batches from a saved cursor ---------------------------------

def test_a_run_looks_at_one_batch_of_names_per_bucket_and_the_next_resumes_there(store):
    names = store.object_names()
    names.create_bucket("t1", "walked")
    info, f = names.put("t1", "walked", "seed", [b"x"], ObjectAttributes())
    names.bind_many(f, "walked", [f"k{i:03d}" for i in range(24)], info.etag, ObjectAttributes())
    names.put_bucket_config("t1", "walked", CONFIG, rules_to_mongo(parse_rules([
        {"ID": "all-k", "Filter": {"Prefix": "k"}, "Status": "Enabled", "Expiration": {"Days": "1"}}])))
    later = time.time() + 10  # ten one-second days on
    counts = []
    for _ in range(4):
        summary = apply_lifecycle(names, day_s=1.0, batch=10, now=later)
        counts.append((summary["expired"], "walked" in summary["completed"]))
    # 25 names (k000..k023, then seed): 10, 10, then 5 (4 match) and the pass is complete; then it starts over
    assert counts == [(10, False), (10, False), (4, True), (0, True)]
    assert [d["key"] for d in store.meta.namespace.object_names("walked/", "walked0", 100)] == ["seed"]
    history = store.meta.operations.event_history(EVENT, 10)
    assert [h["expired"] for h in history] == [0, 4, 10, 10]
    assert history[1]["rules"] == [{"bucket": "walked", "rule": "all-k", "expired": 4, "aborted": 0}]


def test_puts_and_reads_tell_when_a_rule_will_expire_the_object(s3):
    """x-amz-expiration on PUT, GET and HEAD: the soonest enabled rule that matches the object, its
    date at a lifecycle-day boundary (this stack's day is one second); nothing where none matches."""
    s3.create_bucket(Bucket="tells")
    rules = [{"ID": "later", "Filter": {"Prefix": "docs/"}, "Status": "Enabled", "Expiration": {"Days": 2000}},
             {"ID": "soon", "Filter": {"Prefix": "docs/"}, "Status": "Enabled", "Expiration": {"Days": 1000}},
             {"ID": "off", "Filter": {"Prefix": "docs/"}, "Status": "Disabled", "Expiration": {"Days": 10}}]
    s3.put_bucket_lifecycle_configuration(Bucket="tells", LifecycleConfiguration={"Rules": rules})
    before = time.time()
    put = s3.put_object(Bucket="tells", Key="docs/a", Body=b"a")
    after = time.time()
    for answer in (put, s3.head_object(Bucket="tells", Key="docs/a"), s3.get_object(Bucket="tells", Key="docs/a")):
        header = answer["ResponseMetadata"]["HTTPHeaders"]["x-amz-expiration"]
        date, rule = re.fullmatch(r'expiry-date="(.+)", rule-id="(.+)"', header).groups()
        assert rule == "soon"
        assert int(before) + 1000 <= parsedate_to_datetime(date).timestamp() <= math.ceil(after) + 1000
    outside = s3.put_object(Bucket="tells", Key="other/a", Body=b"o")
    assert "x-amz-expiration" not in outside["ResponseMetadata"]["HTTPHeaders"]
    assert "x-amz-expiration" not in s3.head_object(Bucket="tells", Key="other/a")["ResponseMetadata"]["HTTPHeaders"]
