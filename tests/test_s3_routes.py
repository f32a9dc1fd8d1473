"""The S3 front end in-process (Flask test client over a real store): routing, virtual hosts,
rate limits, aws-chunked trailers, and clear 4xx answers to bad input."""
from __future__ import annotations

import base64
import hashlib
import zlib

import pytest

from app.s3.routes import create_s3_app
from pipeline.access.credentials import S3Credentials
from tests.s3clients import sign

SECRET = "test-server-secret"


@pytest.fixture
def make_app(store, settings):
    queued: list[str] = []

    def make(**overrides):
        s = settings.with_overrides(secret_key=SECRET, **overrides)
        store.settings = s
        app = create_s3_app(s, store, enqueue=lambda file_id, rid=None, **_: queued.append(file_id))
        app.queued = queued
        return app

    return make


@pytest.fixture
def keys(store):
    return S3Credentials(store.meta, SECRET).create("acme")


def call(app, keys, method: str, path: str, body: bytes = b"", headers: dict | None = None,
         host: str = "localhost", payload_hash: str | None = None):
    signed = sign(method, f"http://{host}{path}", keys, headers=headers, body=body, payload_hash=payload_hash)
    return app.test_client().open(path, method=method, data=body, headers=signed.headers,
                                  base_url=f"http://{host}")


def code(response) -> str:
    text = response.get_data(as_text=True)
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else ""


def test_put_get_and_the_answer_headers(make_app, keys):
    app = make_app()
    assert call(app, keys, "PUT", "/bkt").status_code == 200
    r = call(app, keys, "PUT", "/bkt/some/key", b"content")
    assert r.status_code == 200 and r.headers["ETag"] == f'"{hashlib.md5(b"content").hexdigest()}"'
    assert len(app.queued) == 1  # queued for ingest like an /api upload
    r = call(app, keys, "GET", "/bkt/some/key")
    assert r.get_data() == b"content"
    assert r.headers["x-amz-request-id"] == r.headers["X-Request-ID"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_virtual_host_style_names_the_bucket_in_the_host(make_app, keys):
    app = make_app(s3_domain="s3.example.test")
    assert call(app, keys, "PUT", "/", host="vhost.s3.example.test").status_code == 200
    assert call(app, keys, "PUT", "/dir/file.txt", b"virtual", host="vhost.s3.example.test").status_code == 200
    assert call(app, keys, "GET", "/vhost/dir/file.txt").get_data() == b"virtual"  # path style still works
    r = call(app, keys, "GET", "/?list-type=2", host="vhost.s3.example.test")
    assert "<Key>dir/file.txt</Key>" in r.get_data(as_text=True)


def test_over_the_rate_limit_answers_503_slowdown_with_retry_after(make_app, keys):
    app = make_app(s3_rate_limit="3 per minute")
    answers = [call(app, keys, "GET", "/") for _ in range(4)]
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    assert answers[3].status_code == 503 and code(answers[3]) == "SlowDown"
    assert int(answers[3].headers["Retry-After"]) >= 1


def test_unsigned_trailer_checksum_is_verified_stored_and_returned(make_app, keys):
    app = make_app()
    call(app, keys, "PUT", "/bkt")
    data = b"x" * 70_000
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()

    def chunked(value: str) -> bytes:
        return (f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n" +
                f"x-amz-checksum-crc32:{value}\n\r\n".encode())

    headers = {"content-encoding": "aws-chunked", "x-amz-trailer": "x-amz-checksum-crc32",
               "x-amz-decoded-content-length": str(len(data))}
    r = call(app, keys, "PUT", "/bkt/trailer", chunked(crc), headers=headers,
             payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert r.status_code == 200, r.get_data()
    head = call(app, keys, "HEAD", "/bkt/trailer", headers={"x-amz-checksum-mode": "ENABLED"})
    assert head.headers["x-amz-checksum-crc32"] == crc and "Content-Encoding" not in head.headers
    bad = base64.b64encode(b"\0\0\0\0").decode()
    r = call(app, keys, "PUT", "/bkt/trailer-bad", chunked(bad), headers=headers,
             payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert r.status_code == 400 and code(r) == "BadDigest"
    assert call(app, keys, "HEAD", "/bkt/trailer-bad").status_code == 404


def test_content_md5_mismatch_is_bad_digest_and_stores_nothing(make_app, keys):
    app = make_app()
    call(app, keys, "PUT", "/bkt")
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    r = call(app, keys, "PUT", "/bkt/md5", b"payload", headers={"Content-MD5": wrong})
    assert r.status_code == 400 and code(r) == "BadDigest"
    assert call(app, keys, "HEAD", "/bkt/md5").status_code == 404


@pytest.mark.parametrize("method,path,body,expected", [
    ("POST", "/bkt?delete", b"<not-xml", ("MalformedXML", 400)),
    ("POST", "/bkt?delete", b"<Delete></Delete>", ("MalformedXML", 400)),
    ("GET", "/bkt?max-keys=lots", b"", ("InvalidArgument", 400)),
    ("GET", "/bkt?list-type=2&continuation-token=%%%", b"", ("InvalidArgument", 400)),
    ("GET", "/bkt?encoding-type=base64", b"", ("InvalidArgument", 400)),
    ("PUT", "/bkt/k?partNumber=0&uploadId=nope", b"x", ("InvalidArgument", 400)),
    ("PUT", "/bkt/k?partNumber=1&uploadId=nope", b"x", ("NoSuchUpload", 404)),
    ("POST", "/bkt/k?uploadId=nope", b"<CompleteMultipartUpload/>", ("MalformedXML", 400)),
    ("GET", "/bkt/%FF%FE", b"", ("InvalidURI", 400)),  # not UTF-8 once decoded, as S3
    ("PUT", "/bkt/" + "k" * 1025, b"x", ("KeyTooLongError", 400)),
    ("GET", "/bkt/k?versionId=v1", b"", ("InvalidArgument", 400)),
    ("GET", "/bkt?policy", b"", ("NoSuchBucketPolicy", 404)),
    ("PUT", "/bkt?policy", b"[]", ("MalformedPolicy", 400)),
    ("PUT", "/bkt?acl", b"<nope/>", ("MalformedACLError", 400)),
    ("PUT", "/bkt/k?retention", b"", ("InvalidRequest", 400)),  # object lock: not on this bucket
    ("GET", "/bkt?replication", b"", ("NotImplemented", 501)),
    ("PATCH", "/bkt/k", b"", ("MethodNotAllowed", 405)),
])
def test_bad_input_gets_a_clear_4xx(make_app, keys, method, path, body, expected):
    app = make_app()
    call(app, keys, "PUT", "/bkt")
    r = call(app, keys, method, path, body)
    assert (code(r), r.status_code) == expected, r.get_data()


@pytest.mark.parametrize("source, expected", [
    ("bkt/missing", ("NoSuchKey", 404)),
    ("bkt", ("InvalidArgument", 400)),
    ("/nobucket/k", ("NoSuchBucket", 404)),
    ("bkt/src?versionId=v2", ("InvalidArgument", 400)),  # the source exists: only its version is wrong
    ("bkt/%FF%FE", ("InvalidArgument", 400)),
])
def test_copy_from_a_missing_or_malformed_source_is_a_4xx(make_app, keys, source, expected):
    app = make_app()
    call(app, keys, "PUT", "/bkt")
    assert call(app, keys, "PUT", "/bkt/src", b"source").status_code == 200
    r = call(app, keys, "PUT", "/bkt/k", headers={"x-amz-copy-source": source})
    assert (code(r), r.status_code) == expected, r.get_data()
    assert call(app, keys, "HEAD", "/bkt/k").status_code == 404


def test_head_errors_have_no_body(make_app, keys):
    app = make_app()
    r = call(app, keys, "HEAD", "/nobucket/key")
    assert r.status_code == 404 and r.get_data() == b""
    assert r.headers["x-amz-request-id"]


def test_another_owner_creating_the_same_bucket_is_refused(make_app, keys, store):
    app = make_app()
    assert call(app, keys, "PUT", "/shared-name").status_code == 200
    other = S3Credentials(store.meta, SECRET).create("globex")
    r = call(app, other, "PUT", "/shared-name")
    assert (code(r), r.status_code) == ("BucketAlreadyExists", 409)
    r = call(app, other, "GET", "/shared-name")
    assert (code(r), r.status_code) == ("AccessDenied", 403)
