"""S3 writes as AWS does them, through real clients against gunicorn + celery worker: conditional
writes (If-Match, If-None-Match: *) that race, multipart edge cases, GET/HEAD ?partNumber=,
checksums of every algorithm single-part and multipart (COMPOSITE and FULL_OBJECT), GetObjectAttributes
and the stored Content-Encoding of an aws-chunked upload."""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import threading

import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from app.s3 import checksums
from pipeline.errors import NoSuchKey, PreconditionFailed
from pipeline.metadata.model import DELETED, KIND_FILE
from pipeline.namespace.objects import ObjectAttributes, WriteCondition
from tests.s3clients import aws_chunked, boto3_client, encode_chunks, sign
from tests.stack import BIN, MiB, random_bytes

BUCKET = "writes"
ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


@pytest.fixture(scope="module")
def s3(s3_stack, s3_keys):
    client = boto3_client(s3_stack, s3_keys)
    client.create_bucket(Bucket=BUCKET)
    return client


def error_code(exc: ClientError) -> tuple[str, int]:
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


def live_files(s3_stack, key: str) -> list[dict]:
    """The object files of a key that are not deleted (a losing write's file must be)."""
    with s3_stack.metadata() as meta:
        return list(meta.db.files.find({"bucket": BUCKET, "key": key, "kind": KIND_FILE,
                                     "status": {"$ne": DELETED}}))


def object_doc(s3_stack, key: str) -> dict:
    with s3_stack.metadata() as meta:
        return meta.namespace.get_object_name(f"{BUCKET}/{key}")


def race(s3_stack, s3_keys, n: int, write) -> list[tuple[int, object]]:
    """Run ``write(client, i)`` in ``n`` threads released together; (status, result or error code)."""
    clients = [boto3_client(s3_stack, s3_keys) for _ in range(n)]
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i):
        barrier.wait()
        try:
            results[i] = (200, write(clients[i], i))
        except ClientError as exc:
            results[i] = (exc.response["ResponseMetadata"]["HTTPStatusCode"], exc.response["Error"]["Code"])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


# --- conditional writes ---------------------------------------------------------------------------

@pytest.fixture
def names(store):
    n = store.object_names()
    n.create_bucket("t1", "photos")
    return n


def interleaved(data: bytes, meanwhile):
    """A body that runs ``meanwhile()`` after its first piece: a competing write lands after this
    write's precondition was checked and before its name is written."""
    yield data[:10]
    meanwhile()
    yield data[10:]


def files_of(store, key: str) -> dict[str, str]:
    return {str(d["_id"]): d["status"] for d in store.meta.db.files.find({"bucket": "photos", "key": key})}


@pytest.mark.parametrize("condition", ["if_match", "if_none_match"])
def test_a_conditional_write_overtaken_after_its_check_fails_and_its_file_is_discarded(names, store, condition):
    etag = None
    if condition == "if_match":
        etag = names.put("t1", "photos", "k", iter([b"original"]), ObjectAttributes())[0].etag
    cond = WriteCondition(if_match=(etag,)) if etag else WriteCondition(if_none_match=True)
    winner = {}

    def competing_write():
        winner["info"] = names.put("t1", "photos", "k", iter([b"the competing write"]), ObjectAttributes(),
                                   condition=cond)[0]

    with pytest.raises(PreconditionFailed):
        names.put("t1", "photos", "k", interleaved(b"the overtaken write's bytes", competing_write),
                  ObjectAttributes(), condition=cond)
    info = names.head("t1", "photos", "k")
    assert info.file_id == winner["info"].file_id
    assert b"".join(names.read(info)) == b"the competing write"
    live = [f for f, status in files_of(store, "k").items() if status != DELETED]
    assert live == [info.file_id]


def test_if_none_match_etags_are_checked_again_against_a_write_that_landed_meanwhile(names, store):
    names.put("t1", "photos", "k", iter([b"original"]), ObjectAttributes())
    competing = b"the competing write"
    cond = WriteCondition(none_match=(hashlib.md5(competing).hexdigest(),))
    with pytest.raises(PreconditionFailed):
        names.put("t1", "photos", "k", interleaved(b"the overtaken write's bytes", lambda: names.put(
            "t1", "photos", "k", iter([competing]), ObjectAttributes())), ObjectAttributes(), condition=cond)
    info = names.head("t1", "photos", "k")
    assert b"".join(names.read(info)) == competing
    assert [f for f, status in files_of(store, "k").items() if status != DELETED] == [info.file_id]


def test_if_match_on_a_key_deleted_after_the_check_is_no_such_key(names, store):
    etag = names.put("t1", "photos", "k", iter([b"original"]), ObjectAttributes())[0].etag
    with pytest.raises(NoSuchKey):
        names.put("t1", "photos", "k", interleaved(b"bytes of a write", lambda: names.delete("t1", "photos", "k")),
                  ObjectAttributes(), condition=WriteCondition(if_match=(etag,)))
    assert all(status == DELETED for status in files_of(store, "k").values())


def test_the_part_upload_that_finished_last_wins_whatever_the_order_of_records(names, store):
    upload = names.create_upload("t1", "photos", "k", ObjectAttributes())
    early = store.receive("t1", "k.part1", None, iter([b"finished first"]), md5=True, sha256=False, kind="part")
    late = store.receive("t1", "k.part1", None, iter([b"finished last"]), md5=True, sha256=False, kind="part")
    names.record_part(upload, 1, late, late.md5, None, finished=200.0)
    names.record_part(upload, 1, early, early.md5, None, finished=100.0)  # recorded last, finished first
    assert [(p.etag, p.file_id) for p in names.parts(upload)] == [(late.md5, late.id)]
    assert store.meta.files.get_file(early.id).status == DELETED
    newest = store.receive("t1", "k.part1", None, iter([b"newest"]), md5=True, sha256=False, kind="part")
    names.record_part(upload, 1, newest, newest.md5, None, finished=300.0)
    assert [p.file_id for p in names.parts(upload)] == [newest.id]
    assert store.meta.files.get_file(late.id).status == DELETED


def test_racing_if_match_puts_exactly_one_wins_and_losers_leave_no_file(s3_stack, s3_keys, s3):
    key = "race/if-match"
    etag = s3.put_object(Bucket=BUCKET, Key=key, Body=b"original")["ETag"]
    bodies = [random_bytes(2 * MiB + i, seed=i) for i in range(8)]
    results = race(s3_stack, s3_keys, 8, lambda c, i: c.put_object(Bucket=BUCKET, Key=key, Body=bodies[i],
                                                                   IfMatch=etag)["ETag"])
    winners = [i for i, (status, _) in enumerate(results) if status == 200]
    assert len(winners) == 1, results
    assert sorted(r for r in results if r[0] != 200) == [(412, "PreconditionFailed")] * 7
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == bodies[winners[0]]
    assert [str(f["_id"]) for f in live_files(s3_stack, key)] == [object_doc(s3_stack, key)["file"]]


def test_racing_if_none_match_puts_exactly_one_wins_and_losers_leave_no_file(s3_stack, s3_keys, s3):
    key = "race/if-none-match"
    bodies = [random_bytes(2 * MiB + i, seed=100 + i) for i in range(8)]
    results = race(s3_stack, s3_keys, 8, lambda c, i: c.put_object(Bucket=BUCKET, Key=key, Body=bodies[i],
                                                                   IfNoneMatch="*")["ETag"])
    winners = [i for i, (status, _) in enumerate(results) if status == 200]
    assert len(winners) == 1, results
    assert sorted(r for r in results if r[0] != 200) == [(412, "PreconditionFailed")] * 7
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == bodies[winners[0]]
    assert [str(f["_id"]) for f in live_files(s3_stack, key)] == [object_doc(s3_stack, key)["file"]]


def test_if_match_answers(s3):
    key = "cond/if-match"
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert error_code(info.value) == ("NoSuchKey", 404)
    first = s3.put_object(Bucket=BUCKET, Key=key, Body=b"one")["ETag"]
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"two", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert error_code(info.value) == ("PreconditionFailed", 412)
    second = s3.put_object(Bucket=BUCKET, Key=key, Body=b"two", IfMatch=first)["ETag"]
    assert second == f'"{hashlib.md5(b"two").hexdigest()}"'
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"three", IfMatch="*")
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"four", IfMatch=first)  # the old ETag no longer matches
    assert error_code(info.value) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"five", IfNoneMatch="*")
    assert error_code(info.value) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"three"


def test_if_none_match_with_etags_refuses_only_a_listed_current_etag(s3_stack, s3):
    key = "cond/if-none-match-etag"
    for condition in ({"IfMatch": "*"}, {"IfMatch": '"badetag"'}):  # If-Match on a missing key: NoSuchKey
        with pytest.raises(ClientError) as info:
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"x", **condition)
        assert error_code(info.value) == ("NoSuchKey", 404)
    first = s3.put_object(Bucket=BUCKET, Key=key, Body=b"one", IfNoneMatch='"badetag"')["ETag"]  # missing: written
    for listed in (first, f'"badetag", {first}'):
        with pytest.raises(ClientError) as info:
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"two", IfNoneMatch=listed)
        assert error_code(info.value) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"one"
    second = s3.put_object(Bucket=BUCKET, Key=key, Body=b"two", IfNoneMatch='"badetag"')["ETag"]
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"three", IfNoneMatch=first)  # no longer the current ETag
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"three" and second != first
    assert len(live_files(s3_stack, key)) == 1
    # CopyObject and CompleteMultipartUpload take it too
    src = {"Bucket": BUCKET, "Key": key}
    current = s3.head_object(Bucket=BUCKET, Key=key)["ETag"]
    s3.put_object(Bucket=BUCKET, Key="cond/copy-dst", Body=b"dst")
    dst = s3.head_object(Bucket=BUCKET, Key="cond/copy-dst")["ETag"]
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket=BUCKET, Key="cond/copy-dst", CopySource=src, IfNoneMatch=dst)
    assert error_code(info.value) == ("PreconditionFailed", 412)
    s3.copy_object(Bucket=BUCKET, Key="cond/copy-dst", CopySource=src, IfNoneMatch=current)
    assert s3.get_object(Bucket=BUCKET, Key="cond/copy-dst")["Body"].read() == b"three"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    part = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"four")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": part}]}
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload=parts,
                                     IfNoneMatch=current)
    assert error_code(info.value) == ("PreconditionFailed", 412)
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload=parts, IfNoneMatch=first)
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"four"
    assert len(live_files(s3_stack, key)) == 1


def test_racing_puts_of_one_body_with_if_none_match_its_etag_exactly_one_wins(s3_stack, s3_keys, s3):
    key = "race/if-none-match-etag"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"original")
    body = random_bytes(2 * MiB, seed=500)
    etag = f'"{hashlib.md5(body).hexdigest()}"'
    results = race(s3_stack, s3_keys, 8, lambda c, i: c.put_object(Bucket=BUCKET, Key=key, Body=body,
                                                                   IfNoneMatch=etag)["ETag"])
    assert sorted(status for status, _ in results) == [200] + [412] * 7, results
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
    assert [str(f["_id"]) for f in live_files(s3_stack, key)] == [object_doc(s3_stack, key)["file"]]


def test_copy_object_destination_conditions(s3_stack, s3):
    s3.put_object(Bucket=BUCKET, Key="copy/src", Body=b"source bytes")
    dst_etag = s3.put_object(Bucket=BUCKET, Key="copy/dst", Body=b"old destination")["ETag"]
    src = {"Bucket": BUCKET, "Key": "copy/src"}
    for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"ffffffffffffffffffffffffffffffff"'}):
        with pytest.raises(ClientError) as info:
            s3.copy_object(Bucket=BUCKET, Key="copy/dst", CopySource=src, **condition)
        assert error_code(info.value) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket=BUCKET, Key="copy/missing", CopySource=src, IfMatch=dst_etag)
    assert error_code(info.value) == ("NoSuchKey", 404)
    assert s3.get_object(Bucket=BUCKET, Key="copy/dst")["Body"].read() == b"old destination"
    s3.copy_object(Bucket=BUCKET, Key="copy/dst", CopySource=src, IfMatch=dst_etag)
    s3.copy_object(Bucket=BUCKET, Key="copy/new", CopySource=src, IfNoneMatch="*")
    for key in ("copy/dst", "copy/new"):
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"source bytes"
        assert len(live_files(s3_stack, key)) == 1


def test_complete_with_if_none_match_when_the_key_appeared_meanwhile(s3_stack, s3):
    key = "cond/mpu"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    data = random_bytes(MiB, seed=7)
    etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=data)["ETag"]
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"arrived first")
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload=parts,
                                     IfNoneMatch="*")
    assert error_code(info.value) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"arrived first"
    assert len(live_files(s3_stack, key)) == 1
    # the upload is intact: its part is listed and a completion without the condition succeeds
    assert [p["PartNumber"] for p in s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload)["Parts"]] == [1]
    current = s3.head_object(Bucket=BUCKET, Key=key)["ETag"]
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload=parts, IfMatch=current)
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
    assert len(live_files(s3_stack, key)) == 1


def test_racing_if_none_match_completions_exactly_one_wins(s3_stack, s3_keys, s3):
    key = "race/mpu"
    uploads = []
    for i in range(4):
        upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        data = random_bytes(1000 + i, seed=300 + i)
        etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=data)["ETag"]
        uploads.append((upload, etag, data))
    results = race(s3_stack, s3_keys, 4, lambda c, i: c.complete_multipart_upload(
        Bucket=BUCKET, Key=key, UploadId=uploads[i][0], IfNoneMatch="*",
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": uploads[i][1]}]})["ETag"])
    winners = [i for i, (status, _) in enumerate(results) if status == 200]
    assert len(winners) == 1, results
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == uploads[winners[0]][2]
    assert len(live_files(s3_stack, key)) == 1


# --- multipart edge cases and partNumber ------------------------------------------------------------

def test_completion_errors(s3):
    key = "mpu/errors"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    small = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"small")["ETag"]
    last = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=2, Body=b"last")["ETag"]

    def complete(parts):
        with pytest.raises(ClientError) as info:
            s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]})
        return error_code(info.value)

    assert complete([(2, last), (1, small)]) == ("InvalidPartOrder", 400)
    zeros, ones = '"' + "0" * 32 + '"', '"' + "1" * 32 + '"'
    assert complete([(1, zeros), (1, ones)]) == ("InvalidPart", 400)  # a number listed twice, neither ETag its part's
    assert complete([(1, small), (3, last)]) == ("InvalidPart", 400)
    assert complete([(1, '"' + "0" * 32 + '"')]) == ("InvalidPart", 400)
    assert complete([(1, small), (2, last)]) == ("EntityTooSmall", 400)


def test_a_part_uploaded_twice_is_the_later_upload(s3):
    key = "mpu/twice"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"first")
    etag = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"second")["ETag"]
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"second"


def test_a_resent_part_listed_twice_is_composed_once_from_the_upload_that_finished_last(s3):
    key = "mpu/resent"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    first = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"A" * 8)["ETag"]
    second = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"B" * 8)["ETag"]
    with pytest.raises(ClientError) as info:  # the earlier upload's ETag alone names a replaced part
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": first}]})
    assert error_code(info.value) == ("InvalidPart", 400)
    done = s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": first}, {"PartNumber": 1, "ETag": second}]})
    assert done["ETag"] == f'"{hashlib.md5(bytes.fromhex(second.strip(chr(34)))).hexdigest()}-1"'
    got = s3.get_object(Bucket=BUCKET, Key=key)
    assert got["Body"].read() == b"B" * 8 and s3.head_object(Bucket=BUCKET, Key=key, PartNumber=1)["PartsCount"] == 1


def test_part_number_beyond_the_parts_is_invalid_part_number(s3):
    s3.put_object(Bucket=BUCKET, Key="parts/single", Body=b"0123456789")
    got = s3.get_object(Bucket=BUCKET, Key="parts/single", PartNumber=1)
    assert got["Body"].read() == b"0123456789"
    assert s3.head_object(Bucket=BUCKET, Key="parts/single", PartNumber=1)["ContentLength"] == 10
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=BUCKET, Key="parts/single", PartNumber=2)
    assert error_code(info.value) == ("InvalidPartNumber", 400)
    with pytest.raises(ClientError) as info:
        s3.head_object(Bucket=BUCKET, Key="parts/single", PartNumber=2)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    key = "parts/multi"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    datas = [random_bytes(5 * MiB, seed=31), b"tail"]
    etags = [s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=n, Body=d)["ETag"]
             for n, d in enumerate(datas, 1)]
    s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]})
    part2 = s3.get_object(Bucket=BUCKET, Key=key, PartNumber=2)
    assert part2["Body"].read() == b"tail" and part2["PartsCount"] == 2
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket=BUCKET, Key=key, PartNumber=3)
    assert error_code(info.value) == ("InvalidPartNumber", 400)


# --- checksums ------------------------------------------------------------------------------------

def test_checksum_headers_only_with_checksum_mode_and_never_on_a_range(s3_stack, s3_keys, s3):
    data = b"checksummed body"
    put = s3.put_object(Bucket=BUCKET, Key="sum/mode", Body=data, ChecksumAlgorithm="SHA256")
    assert put["ChecksumSHA256"] == checksums.compute("SHA256", data)
    url = f"{s3_stack.s3_url}/{BUCKET}/sum/mode"
    for method in ("GET", "HEAD"):
        plain = requests.request(method, url, headers=sign(method, url, s3_keys).headers, timeout=30)
        assert plain.status_code == 200 and not any(h.lower().startswith("x-amz-checksum") for h in plain.headers)
        enabled = requests.request(method, url, timeout=30, headers=sign(
            method, url, s3_keys, headers={"x-amz-checksum-mode": "ENABLED"}).headers)
        assert enabled.headers["x-amz-checksum-sha256"] == put["ChecksumSHA256"]
        assert enabled.headers["x-amz-checksum-type"] == "FULL_OBJECT"
    ranged = s3.get_object(Bucket=BUCKET, Key="sum/mode", Range="bytes=0-3", ChecksumMode="ENABLED")
    assert ranged["Body"].read() == b"chec" and "ChecksumSHA256" not in ranged


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_boto3_put_object_round_trips_each_algorithm(s3, algorithm):
    data = random_bytes(MiB + 3, seed=len(algorithm))
    key = f"sum/put-{algorithm}"
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=data, ChecksumAlgorithm=algorithm)
    member = "Checksum" + algorithm
    assert put[member] == checksums.compute(algorithm, data)
    got = s3.get_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    assert got["Body"].read() == data  # botocore verifies the body against the header
    assert got[member] == put[member] and got["ChecksumType"] == "FULL_OBJECT"


def _part_values(algorithm: str, data: bytes, size: int) -> list[bytes]:
    return [base64.b64decode(checksums.compute(algorithm, data[i:i + size])) for i in range(0, len(data), size)]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_boto3_upload_file_multipart_round_trips_each_algorithm(s3, tmp_path, algorithm):
    data = random_bytes(11 * MiB + 5, seed=40 + len(algorithm))
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(data)
    key = f"sum/mpu-{algorithm}"
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.upload_file(str(src), BUCKET, key, ExtraArgs={"ChecksumAlgorithm": algorithm}, Config=config)
    head = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    assert head["ETag"].endswith('-3"')
    member = "Checksum" + algorithm
    if algorithm == "CRC64NVME":  # full-object only: the CRC of the whole object
        assert head["ChecksumType"] == "FULL_OBJECT"
        assert head[member] == checksums.compute(algorithm, data)
    else:
        assert head["ChecksumType"] == "COMPOSITE"
        assert head[member] == checksums.composite(algorithm, _part_values(algorithm, data, 5 * MiB))
    got = s3.get_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    assert got["Body"].read() == data and got[member] == head[member]
    s3.download_file(BUCKET, key, str(dst))
    assert dst.read_bytes() == data


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME"])
def test_full_object_multipart_checksum_is_combined_and_verified(s3, algorithm):
    key = f"sum/full-{algorithm}"
    datas = [random_bytes(5 * MiB, seed=51), random_bytes(5 * MiB + 1, seed=52), b"last bytes"]
    whole = b"".join(datas)
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key, ChecksumAlgorithm=algorithm,
                                        ChecksumType="FULL_OBJECT")
    assert upload["ChecksumAlgorithm"] == algorithm and upload["ChecksumType"] == "FULL_OBJECT"
    member = "Checksum" + algorithm
    parts = []
    for n, d in enumerate(datas, 1):
        answer = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], PartNumber=n, Body=d,
                                ChecksumAlgorithm=algorithm)
        assert answer[member] == checksums.compute(algorithm, d)
        parts.append({"PartNumber": n, "ETag": answer["ETag"], member: answer[member]})
    wrong = checksums.compute(algorithm, b"other bytes")
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": parts}, ChecksumType="FULL_OBJECT", **{member: wrong})
    assert error_code(info.value) == ("BadDigest", 400)
    bad_part = [dict(parts[0], **{member: wrong}), *parts[1:]]
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": bad_part})
    assert error_code(info.value) == ("InvalidPart", 400)
    done = s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload["UploadId"],
                                        MultipartUpload={"Parts": parts}, ChecksumType="FULL_OBJECT",
                                        **{member: checksums.compute(algorithm, whole)})
    assert done[member] == checksums.compute(algorithm, whole) and done["ChecksumType"] == "FULL_OBJECT"
    got = s3.get_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    assert got["Body"].read() == whole and got[member] == done[member] and got["ChecksumType"] == "FULL_OBJECT"


def test_composite_completion_takes_the_stored_part_checksums_and_needs_the_upload_mode(s3):
    key = "sum/composite-missing"
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=key, ChecksumAlgorithm="SHA256")["UploadId"]
    answer = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"only part",
                            ChecksumAlgorithm="SHA256")
    with pytest.raises(ClientError) as info:
        s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=2, Body=b"x", ChecksumAlgorithm="CRC32")
    assert error_code(info.value) == ("InvalidRequest", 400)
    for algorithm, kind in (("SHA256", "FULL_OBJECT"), ("CRC64NVME", "COMPOSITE")):
        with pytest.raises(ClientError) as info:
            s3.create_multipart_upload(Bucket=BUCKET, Key=key, ChecksumAlgorithm=algorithm, ChecksumType=kind)
        assert error_code(info.value) == ("InvalidRequest", 400)
    # the part's checksum left out of the list (CompletedPart: "Required: No"): the one verified on upload stands
    done = s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": answer["ETag"]}]})
    expected = checksums.composite("SHA256", [hashlib.sha256(b"only part").digest()])
    assert done["ChecksumSHA256"] == expected and done["ChecksumType"] == "COMPOSITE"
    attributes = s3.get_object_attributes(Bucket=BUCKET, Key=key, ObjectAttributes=["Checksum", "ObjectParts"])
    assert attributes["Checksum"]["ChecksumSHA256"] == expected
    assert attributes["ObjectParts"]["Parts"][0]["ChecksumSHA256"] == answer["ChecksumSHA256"]


@pytest.mark.parametrize("algorithm", ["SHA256", "CRC64NVME", "CRC32"])
def test_a_checksum_value_that_is_no_digest_at_all_is_bad_digest(s3, algorithm):
    key = f"sum/malformed-{algorithm}"
    for value in ("bad", checksums.compute(algorithm, b"other bytes")):
        with pytest.raises(ClientError) as info:
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"A" * 1024, ChecksumAlgorithm=algorithm,
                          **{f"Checksum{algorithm}": value})
        assert error_code(info.value) == ("BadDigest", 400)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key=key)


@pytest.fixture(scope="module")
def aws(s3_stack, s3_keys, tmp_path_factory):
    home = tmp_path_factory.mktemp("awshome")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": s3_keys[0], "AWS_SECRET_ACCESS_KEY": s3_keys[1],
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(home / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"), "HOME": str(home)}

    def aws(*args: str) -> str:
        done = subprocess.run([str(BIN / "aws"), "--endpoint-url", s3_stack.s3_url, *args], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{args}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done.stdout

    return aws


def test_aws_cli_default_cp_single_and_multipart_round_trips(s3, aws, tmp_path):
    for size in (1000, 17 * MiB + 1):  # the second is above aws-cli's 8 MiB multipart threshold
        src, back = tmp_path / f"{size}.bin", tmp_path / f"{size}.back"
        src.write_bytes(random_bytes(size, seed=size % 997))
        aws("s3", "cp", str(src), f"s3://{BUCKET}/cli/{size}.bin")
        aws("s3", "cp", f"s3://{BUCKET}/cli/{size}.bin", str(back))
        assert back.read_bytes() == src.read_bytes()
        got = s3.get_object(Bucket=BUCKET, Key=f"cli/{size}.bin", ChecksumMode="ENABLED")
        assert got["Body"].read() == src.read_bytes()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_aws_cli_put_object_with_each_checksum_algorithm(s3, aws, tmp_path, algorithm):
    src = tmp_path / "body.bin"
    src.write_bytes(random_bytes(300_000, seed=9))
    aws("s3api", "put-object", "--bucket", BUCKET, "--key", f"cli/{algorithm}", "--body", str(src),
        "--checksum-algorithm", algorithm)
    got = s3.get_object(Bucket=BUCKET, Key=f"cli/{algorithm}", ChecksumMode="ENABLED")
    assert got["Body"].read() == src.read_bytes()
    assert got["Checksum" + algorithm] == checksums.compute(algorithm, src.read_bytes())


# --- GetObjectAttributes ----------------------------------------------------------------------------

def test_get_object_attributes_of_a_single_part_object(s3_stack, s3_keys, s3):
    data = b"attributes body"
    put = s3.put_object(Bucket=BUCKET, Key="attr/single", Body=data, ChecksumAlgorithm="CRC32C")
    got = s3.get_object_attributes(Bucket=BUCKET, Key="attr/single",
                                   ObjectAttributes=["ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"])
    assert got["ETag"] == put["ETag"].strip('"')  # unquoted, as AWS writes it there
    assert got["Checksum"] == {"ChecksumCRC32C": put["ChecksumCRC32C"], "ChecksumType": "FULL_OBJECT"}
    assert got["ObjectSize"] == len(data) and got["StorageClass"] == "STANDARD" and "ObjectParts" not in got
    only = s3.get_object_attributes(Bucket=BUCKET, Key="attr/single", ObjectAttributes=["ObjectSize"])
    assert only["ObjectSize"] == len(data) and "ETag" not in only
    url = f"{s3_stack.s3_url}/{BUCKET}/attr/single?attributes"
    bad = requests.get(url, timeout=30, headers=sign("GET", url, s3_keys,
                                                     headers={"x-amz-object-attributes": "Colour"}).headers)
    assert bad.status_code == 400 and "<Code>InvalidArgument</Code>" in bad.text
    with pytest.raises(ClientError) as info:
        s3.get_object_attributes(Bucket=BUCKET, Key="attr/missing", ObjectAttributes=["ETag"])
    assert error_code(info.value) == ("NoSuchKey", 404)


def test_get_object_attributes_pages_the_parts_of_a_multipart_object(s3, tmp_path):
    data = random_bytes(11 * MiB, seed=61)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    config = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    s3.upload_file(str(src), BUCKET, "attr/multi", ExtraArgs={"ChecksumAlgorithm": "CRC32"}, Config=config)
    first = s3.get_object_attributes(Bucket=BUCKET, Key="attr/multi", MaxParts=2,
                                     ObjectAttributes=["ObjectParts", "Checksum", "ETag"])
    parts = first["ObjectParts"]
    assert parts["TotalPartsCount"] == 3 and parts["IsTruncated"] and parts["NextPartNumberMarker"] == 2
    expected = _part_values("CRC32", data, 5 * MiB)
    assert [(p["PartNumber"], p["Size"], p["ChecksumCRC32"]) for p in parts["Parts"]] == [
        (1, 5 * MiB, base64.b64encode(expected[0]).decode()), (2, 5 * MiB, base64.b64encode(expected[1]).decode())]
    assert first["Checksum"]["ChecksumType"] == "COMPOSITE" and first["ETag"].endswith("-3")
    rest = s3.get_object_attributes(Bucket=BUCKET, Key="attr/multi", PartNumberMarker=2,
                                    ObjectAttributes=["ObjectParts"])["ObjectParts"]
    assert not rest["IsTruncated"] and [(p["PartNumber"], p["Size"]) for p in rest["Parts"]] == [(3, MiB)]


# --- Content-Encoding of an aws-chunked upload ---------------------------------------------------------

@pytest.mark.parametrize("sent, stored", [("aws-chunked, deflate, gzip", "deflate, gzip"),
                                          ("aws-chunked", None)])
def test_aws_chunked_is_removed_from_the_stored_content_encoding(s3_stack, s3_keys, s3, sent, stored):
    key = f"enc/{len(sent)}"
    url = f"{s3_stack.s3_url}/{BUCKET}/{key}"
    pieces = [random_bytes(70_000, seed=3), b"end"]
    length = sum(len(f"{len(p):x};chunk-signature=".encode()) + 64 + 4 + len(p) for p in [*pieces, b""])
    signed = sign("PUT", url, s3_keys, payload_hash=STREAMING,
                  headers={"content-encoding": sent, "content-length": str(length),
                           "x-amz-decoded-content-length": str(sum(map(len, pieces)))})
    r = requests.put(url, data=encode_chunks(aws_chunked(signed, pieces)), headers=signed.headers, timeout=60)
    assert r.status_code == 200, r.text
    head = s3.head_object(Bucket=BUCKET, Key=key)
    assert head.get("ContentEncoding") == stored
    assert head["ContentLength"] == sum(map(len, pieces))


def test_a_plain_content_encoding_is_kept_byte_for_byte(s3):
    s3.put_object(Bucket=BUCKET, Key="enc/plain", Body=b"x", ContentEncoding="deflate, gzip")
    assert s3.head_object(Bucket=BUCKET, Key="enc/plain")["ContentEncoding"] == "deflate, gzip"
