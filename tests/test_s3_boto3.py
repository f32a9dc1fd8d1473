"""S3 with boto3 (default configuration: CRC32 checksums on) against gunicorn + celery worker."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from pipeline.namespace.objects import name_id
from pipeline.storage.chunkio import fragment_name
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
    head = s3.head_object(Bucket="data", Key=key, ChecksumMode="ENABLED")
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
    data = random_bytes(3 * MiB, seed=77)  # three distinct 1 MiB chunks nothing else shares
    before = set(s3_stack.chunk_files())
    s3.put_object(Bucket="data", Key="ingested.bin", Body=data)
    with s3_stack.metadata() as meta:
        file_id = meta.db.objects.find_one({"_id": name_id("data", "ingested.bin")})["file"]
        wait_for(lambda: meta.files.get_file(file_id).status == "stored", what="the object's file stored")
    k, m = s3_stack.settings.ec_layout
    chunk = s3_stack.settings.chunk_size
    expected = {fragment_name(hashlib.sha256(data[at:at + chunk]).hexdigest(), i, k, m)
                for at in range(0, len(data), chunk) for i in range(k + m)}
    added = {Path(p).name for p in set(s3_stack.chunk_files()) - before}
    assert added == expected and len(added) == 3 * (k + m)
    # stored means the spool no longer holds the chunks: the GET below reads the nodes
    assert not (Path(s3_stack.settings.spool_dir) / file_id).exists()
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


def test_upload_file_and_download_file_of_100_mib_through_the_transfer_manager(s3, tmp_path):
    src, dst = tmp_path / "big.bin", tmp_path / "back.bin"
    with open(src, "wb") as f:
        for block in random_chunks_of(100 * MiB, seed=100):
            f.write(block)
    s3.upload_file(str(src), "data", "big/100mib.bin")
    head = s3.head_object(Bucket="data", Key="big/100mib.bin")
    assert head["ContentLength"] == 100 * MiB
    assert head["ETag"].strip('"').endswith("-13")  # 8 MiB parts: a multipart ETag
    s3.download_file("data", "big/100mib.bin", str(dst))
    assert file_sha256(dst) == file_sha256(src)
    s3.delete_object(Bucket="data", Key="big/100mib.bin")


def random_chunks_of(size, seed):
    from tests.stack import random_chunks

    return random_chunks(size, seed)


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def test_paginator_over_2500_keys_with_a_delimiter(s3_stack, s3_keys):
    from concurrent.futures import ThreadPoolExecutor

    client = boto3_client(s3_stack, s3_keys, max_pool_connections=16)
    client.create_bucket(Bucket="many")
    keys = [f"dir{i % 5}/sub{i % 3}/key{i:05d}" for i in range(2400)] + [f"top{i:03d}" for i in range(100)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket="many", Key=k, Body=k.encode()), keys))
    paginator = client.get_paginator("list_objects_v2")
    pages = list(paginator.paginate(Bucket="many", Delimiter="/", PaginationConfig={"PageSize": 40}))
    prefixes = [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])]
    top = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert prefixes == [f"dir{i}/" for i in range(5)]
    assert top == sorted(k for k in keys if k.startswith("top"))
    every = [o["Key"] for page in paginator.paginate(Bucket="many") for o in page.get("Contents", [])]
    assert every == sorted(keys)
    under = [o["Key"] for page in paginator.paginate(Bucket="many", Prefix="dir3/sub1/")
             for o in page.get("Contents", [])]
    assert under == sorted(k for k in keys if k.startswith("dir3/sub1/"))
    v1 = [o["Key"] for page in client.get_paginator("list_objects").paginate(
        Bucket="many", PaginationConfig={"PageSize": 300}) for o in page.get("Contents", [])]
    assert v1 == sorted(keys)


def test_listing_with_encoding_type_url_and_start_after(s3_stack, s3_keys, s3):
    s3.create_bucket(Bucket="enc")
    for key in ("a b", "a+b", "a%b", "b/c d/e", "z"):
        s3.put_object(Bucket="enc", Key=key, Body=b"")
    out = s3.list_objects_v2(Bucket="enc", Delimiter="/", StartAfter="a b")  # byte order: ' ' < '%' < '+'
    assert [o["Key"] for o in out["Contents"]] == ["a%b", "a+b", "z"]
    assert [p["Prefix"] for p in out["CommonPrefixes"]] == ["b/"]
    assert s3.list_objects_v2(Bucket="enc", Prefix="nothing")["KeyCount"] == 0
    versions = s3.list_object_versions(Bucket="enc")
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in versions["Versions"]][:2] == [
        ("a b", "null", True), ("a%b", "null", True)]
    import requests
    url = boto3_client(s3_stack, s3_keys, signature_version="s3v4").generate_presigned_url("list_objects_v2", Params={"Bucket": "enc", "EncodingType": "url"})
    body = requests.get(url, timeout=30).text
    assert "<EncodingType>url</EncodingType>" in body and "<Key>a%20b</Key>" in body and "<Key>a%2Bb</Key>" in body


def test_copy_object_copies_without_moving_bytes_and_replaces_metadata(s3_stack, s3):
    data = random_bytes(2 * MiB + 3, seed=5)
    s3.put_object(Bucket="data", Key="src.bin", Body=data, ContentType="text/plain", Metadata={"colour": "blue"})
    with s3_stack.metadata() as meta:
        wait_for(lambda: meta.db.files.count_documents({"status": {"$in": ["queued", "processing"]}}) == 0,
                 what="the source ingested")
    before = set(s3_stack.chunk_files())
    out = s3.copy_object(Bucket="data", Key="dst.bin", CopySource={"Bucket": "data", "Key": "src.bin"})
    assert out["CopyObjectResult"]["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket="data", Key="dst.bin")
    assert got["Body"].read() == data
    assert got["ContentType"] == "text/plain" and got["Metadata"] == {"colour": "blue"}
    assert set(s3_stack.chunk_files()) - before == set()
    # onto itself with REPLACE: new metadata, same bytes
    s3.copy_object(Bucket="data", Key="dst.bin", CopySource="data/dst.bin", MetadataDirective="REPLACE",
                   Metadata={"colour": "red"}, ContentType="application/x-thing")
    got = s3.get_object(Bucket="data", Key="dst.bin")
    assert got["Body"].read() == data and got["Metadata"] == {"colour": "red"}
    assert got["ContentType"] == "application/x-thing"
    with pytest.raises(ClientError) as info:
        s3.copy_object(Bucket="data", Key="dst.bin", CopySource="data/dst.bin")
    assert error_code(info.value) == ("InvalidRequest", 400)


def test_delete_objects_reports_each_key_and_quiet_mode_only_errors(s3):
    for i in range(3):
        s3.put_object(Bucket="data", Key=f"del/{i}", Body=b"x")
    out = s3.delete_objects(Bucket="data", Delete={"Objects": [{"Key": f"del/{i}"} for i in range(4)]})
    assert sorted(d["Key"] for d in out["Deleted"]) == ["del/0", "del/1", "del/2", "del/3"]
    assert s3.list_objects_v2(Bucket="data", Prefix="del/")["KeyCount"] == 0
    out = s3.delete_objects(Bucket="data", Delete={"Objects": [{"Key": "del/0"}], "Quiet": True})
    assert "Deleted" not in out and "Errors" not in out


@pytest.mark.parametrize("signature_version", [None, "s3v4"])  # boto3's default presigns with SigV2
def test_presigned_get_and_put_through_plain_requests(s3_stack, s3_keys, s3, signature_version):
    import requests

    signer = boto3_client(s3_stack, s3_keys, signature_version=signature_version) if signature_version else s3
    key = f"pre/signed-{signature_version}.bin"
    url = signer.generate_presigned_url("put_object", Params={"Bucket": "data", "Key": key}, ExpiresIn=60)
    r = requests.put(url, data=b"presigned bytes", timeout=30)
    assert r.status_code == 200, r.text
    url = signer.generate_presigned_url("get_object", Params={"Bucket": "data", "Key": key}, ExpiresIn=60)
    r = requests.get(url, timeout=30)
    assert r.status_code == 200 and r.content == b"presigned bytes"
    r = requests.get(url.replace("pre/signed", "pre/other"), timeout=30)
    assert r.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in r.text


def test_conditional_requests(s3):
    put = s3.put_object(Bucket="data", Key="cond", Body=b"version one")
    etag = put["ETag"]
    modified = s3.head_object(Bucket="data", Key="cond")["LastModified"]
    assert s3.get_object(Bucket="data", Key="cond", IfMatch=etag)["Body"].read() == b"version one"
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="data", Key="cond", IfMatch='"0123"')
    assert error_code(info.value) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="data", Key="cond", IfNoneMatch=etag)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="data", Key="cond", IfModifiedSince=modified)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="data", Key="cond", IfUnmodifiedSince=modified.replace(year=2000))
    assert error_code(info.value) == ("PreconditionFailed", 412)
    # conditional PUT: If-None-Match: * refuses an existing key and keeps the first version
    with pytest.raises(ClientError) as info:
        s3.put_object(Bucket="data", Key="cond", Body=b"version two", IfNoneMatch="*")
    assert error_code(info.value) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket="data", Key="cond")["Body"].read() == b"version one"
    s3.put_object(Bucket="data", Key="cond-new", Body=b"first", IfNoneMatch="*")
    assert s3.get_object(Bucket="data", Key="cond-new")["Body"].read() == b"first"


def test_ranges_and_part_numbers(s3):
    data = random_bytes(1000, seed=9)
    s3.put_object(Bucket="data", Key="ranged", Body=data)
    got = s3.get_object(Bucket="data", Key="ranged", Range="bytes=10-19")
    assert got["Body"].read() == data[10:20] and got["ContentRange"] == "bytes 10-19/1000"
    assert "ChecksumCRC32" not in got  # a checksum covers the whole object only
    assert s3.get_object(Bucket="data", Key="ranged", Range="bytes=-5")["Body"].read() == data[-5:]
    assert s3.get_object(Bucket="data", Key="ranged", Range="bytes=990-")["Body"].read() == data[990:]
    with pytest.raises(ClientError) as info:
        s3.get_object(Bucket="data", Key="ranged", Range="bytes=1000-")
    assert error_code(info.value) == ("InvalidRange", 416)
    assert s3.get_object(Bucket="data", Key="ranged", PartNumber=1)["Body"].read() == data


def test_metadata_and_content_headers_round_trip(s3):
    s3.put_object(Bucket="data", Key="meta", Body=b"{}", ContentType="application/json",
                  Metadata={"owner": "alice", "Project-Id": "42"}, CacheControl="max-age=60",
                  ContentDisposition='attachment; filename="x.json"', ContentEncoding="identity",
                  ContentLanguage="en", Expires="Thu, 01 Dec 2033 16:00:00 GMT", StorageClass="STANDARD_IA",
                  Tagging="a=b", ACL="private")
    head = s3.head_object(Bucket="data", Key="meta")
    assert head["ContentType"] == "application/json"
    assert head["Metadata"] == {"owner": "alice", "project-id": "42"}
    assert head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == 'attachment; filename="x.json"'
    assert head["ContentEncoding"] == "identity" and head["ContentLanguage"] == "en"
    assert head["ResponseMetadata"]["HTTPHeaders"]["expires"] == "Thu, 01 Dec 2033 16:00:00 GMT"
    got = s3.get_object(Bucket="data", Key="meta", ResponseContentType="text/plain",
                        ResponseContentDisposition="inline")
    assert got["ContentType"] == "text/plain" and got["ContentDisposition"] == "inline"


def test_buckets_create_head_list_location_versioning_delete(s3_stack, s3):
    s3.create_bucket(Bucket="eu-bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert s3.get_bucket_location(Bucket="eu-bucket")["LocationConstraint"] == "eu-west-1"
    assert s3.get_bucket_location(Bucket="data")["LocationConstraint"] is None
    s3.create_bucket(Bucket="eu-bucket")  # the same owner again: 200, as AWS us-east-1
    assert "eu-bucket" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.head_bucket(Bucket="eu-bucket")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert "Status" not in s3.get_bucket_versioning(Bucket="eu-bucket")
    s3.put_object(Bucket="eu-bucket", Key="k", Body=b"x")
    with pytest.raises(ClientError) as info:
        s3.delete_bucket(Bucket="eu-bucket")
    assert error_code(info.value) == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket="eu-bucket", Key="k")
    s3.delete_bucket(Bucket="eu-bucket")
    with pytest.raises(ClientError) as info:
        s3.head_bucket(Bucket="eu-bucket")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as info:
        s3.create_bucket(Bucket="Bad_Name")
    assert error_code(info.value) == ("InvalidBucketName", 400)
    other = boto3_client(s3_stack, s3_stack.s3_credentials("globex"))
    with pytest.raises(ClientError) as info:
        other.create_bucket(Bucket="data")
    assert error_code(info.value) == ("BucketAlreadyExists", 409)
    assert "data" not in [b["Name"] for b in other.list_buckets()["Buckets"]]


def test_multipart_upload_lifecycle(s3):
    part1, part2 = random_bytes(5 * MiB, seed=21), random_bytes(1234, seed=22)
    upload = s3.create_multipart_upload(Bucket="data", Key="mp/obj", ContentType="video/mp4",
                                        Metadata={"m": "1"})
    uid = upload["UploadId"]
    assert uid in [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="data")["Uploads"]]
    e1 = s3.upload_part(Bucket="data", Key="mp/obj", UploadId=uid, PartNumber=1, Body=part1)["ETag"]
    e3 = s3.upload_part(Bucket="data", Key="mp/obj", UploadId=uid, PartNumber=3, Body=part2)["ETag"]
    parts = s3.list_parts(Bucket="data", Key="mp/obj", UploadId=uid)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [(1, e1, 5 * MiB), (3, e3, 1234)]
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket="data", Key="mp/obj", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 3, "ETag": e3}, {"PartNumber": 1, "ETag": e1}]})
    assert error_code(info.value) == ("InvalidPartOrder", 400)
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket="data", Key="mp/obj", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": e3}, {"PartNumber": 3, "ETag": e3}]})
    assert error_code(info.value) == ("InvalidPart", 400)
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket="data", Key="mp/obj", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 3, "ETag": e3}, {"PartNumber": 4, "ETag": e3}]})
    assert error_code(info.value) == ("InvalidPart", 400)
    done = {"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e3}]}
    first = s3.complete_multipart_upload(Bucket="data", Key="mp/obj", UploadId=uid, MultipartUpload=done)
    again = s3.complete_multipart_upload(Bucket="data", Key="mp/obj", UploadId=uid, MultipartUpload=done)
    md5s = b"".join(bytes.fromhex(e.strip('"')) for e in (e1, e3))
    assert first["ETag"] == again["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-2"'
    got = s3.get_object(Bucket="data", Key="mp/obj")
    assert got["Body"].read() == part1 + part2
    assert got["ContentType"] == "video/mp4" and got["Metadata"] == {"m": "1"}
    second = s3.get_object(Bucket="data", Key="mp/obj", PartNumber=2)
    assert second["Body"].read() == part2 and second["PartsCount"] == 2
    assert uid not in [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="data").get("Uploads", [])]


def test_multipart_small_parts_abort_and_part_copy(s3):
    uid = s3.create_multipart_upload(Bucket="data", Key="mp/small")["UploadId"]
    e1 = s3.upload_part(Bucket="data", Key="mp/small", UploadId=uid, PartNumber=1, Body=b"a" * 100)["ETag"]
    e2 = s3.upload_part(Bucket="data", Key="mp/small", UploadId=uid, PartNumber=2, Body=b"b" * 100)["ETag"]
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket="data", Key="mp/small", UploadId=uid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert error_code(info.value) == ("EntityTooSmall", 400)
    s3.abort_multipart_upload(Bucket="data", Key="mp/small", UploadId=uid)
    with pytest.raises(ClientError) as info:
        s3.list_parts(Bucket="data", Key="mp/small", UploadId=uid)
    assert error_code(info.value) == ("NoSuchUpload", 404)
    # UploadPartCopy with a range
    source = random_bytes(6 * MiB, seed=31)
    s3.put_object(Bucket="data", Key="mp/source", Body=source)
    uid = s3.create_multipart_upload(Bucket="data", Key="mp/copied")["UploadId"]
    c1 = s3.upload_part_copy(Bucket="data", Key="mp/copied", UploadId=uid, PartNumber=1,
                             CopySource={"Bucket": "data", "Key": "mp/source"},
                             CopySourceRange=f"bytes=0-{5 * MiB - 1}")["CopyPartResult"]["ETag"]
    c2 = s3.upload_part_copy(Bucket="data", Key="mp/copied", UploadId=uid, PartNumber=2,
                             CopySource="data/mp/source", CopySourceRange=f"bytes={5 * MiB}-{6 * MiB - 1}"
                             )["CopyPartResult"]["ETag"]
    assert c1 == f'"{hashlib.md5(source[:5 * MiB]).hexdigest()}"'
    s3.complete_multipart_upload(Bucket="data", Key="mp/copied", UploadId=uid, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": c1}, {"PartNumber": 2, "ETag": c2}]})
    assert s3.get_object(Bucket="data", Key="mp/copied")["Body"].read() == source


def test_unimplemented_operations_answer_501(s3):
    for call in (lambda: s3.get_bucket_website(
            Bucket="data"), lambda: s3.get_bucket_replication(Bucket="data")):
        with pytest.raises(ClientError) as info:
            call()
        assert error_code(info.value) == ("NotImplemented", 501)


def test_a_corrupt_fragment_read_through_s3_is_healed_at_once(s3_stack, s3):
    """No beat runs in this stack: only the heal the S3 read queues can repair the fragment."""
    data = random_bytes(2 * MiB, seed=4242)
    s3.put_object(Bucket="data", Key="to-heal.bin", Body=data)
    with s3_stack.metadata() as meta:
        file_id = meta.db.objects.find_one({"_id": name_id("data", "to-heal.bin")})["file"]
        wait_for(lambda: meta.files.get_file(file_id).status == "stored", what="the object's file stored")
    first = hashlib.sha256(data[:s3_stack.settings.chunk_size]).hexdigest()
    fragment = next(Path(p) for p in s3_stack.chunk_files() if Path(p).name == fragment_name(first, 0, 2, 1))
    good = fragment.read_bytes()
    fragment.write_bytes(bytes([good[0] ^ 0xFF]) + good[1:])  # same size, wrong bytes
    assert s3.get_object(Bucket="data", Key="to-heal.bin")["Body"].read() == data
    wait_for(lambda: fragment.exists() and fragment.read_bytes() == good, timeout=60,
             what="the corrupt fragment rewritten by the heal the read queued")
