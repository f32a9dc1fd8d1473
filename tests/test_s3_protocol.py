"""The S3 wire protocol without a server: SigV4, request bodies, checksums, XML, errors, names, credentials.

Requests are signed by botocore itself (the signer boto3 and aws-cli use); answers are parsed by a
botocore client whose HTTP layer is replaced by the XML under test, so both directions are checked
against the real client code. Streaming bodies are checked against AWS's published examples and a
generator written here from the specification.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import os
import random
import stat
import subprocess
import time
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

import botocore.config
import botocore.exceptions
import botocore.session
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import Credentials
from botocore.httpchecksum import AwsChunkedWrapper, CrtCrc32cChecksum, CrtCrc32Checksum, CrtCrc64NvmeChecksum
from werkzeug.datastructures import Headers

import pipeline.errors as domain
from app.s3 import checksums, errors as s3e, xmlio
from app.s3.payload import PayloadReader
from app.s3.sigv4 import EMPTY_SHA256, AuthContext, authenticate, canonical_query
from config.secretkey import load_or_create
from pipeline.access.credentials import S3Credentials
from pipeline.namespace.names import valid_bucket_name, valid_key
from tests.stack import BIN, ROOT

AK = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ENDPOINT = "http://127.0.0.1:9000"
DOC_NOW = 1369353600.0  # 20130524T000000Z, the date of AWS's worked examples


def lookup(access_key):
    return (SECRET, "acme") if access_key == AK else None


# --- signing with botocore -----------------------------------------------------------------------

def sign(method: str, url: str, headers: dict | None = None, body: bytes = b"", signer=S3SigV4Auth,
         region: str = "us-east-1", **signer_args) -> AWSRequest:
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    signer(Credentials(AK, SECRET), "s3", region, **signer_args).add_auth(request)
    return request


def presign(method: str, url: str, expires: int = 3600, headers: dict | None = None) -> AWSRequest:
    return sign(method, url, headers, signer=S3SigV4QueryAuth, expires=expires)


def wire(request: AWSRequest, drop: tuple[str, ...] = (), **extra: str):
    """(method, raw path, raw query, headers) as the server receives them; host as botocore signed it."""
    parts = urlsplit(request.url)
    headers = Headers()
    headers["Host"] = parts.netloc
    for name, value in request.headers.items():
        if name.lower() not in drop:
            headers[name] = value if isinstance(value, str) else value.decode()
    for name, value in extra.items():
        headers[name.replace("_", "-")] = value
    return request.method, parts.path, parts.query, headers


def auth(request: AWSRequest, now: float | None = None, lookup=lookup, **extra) -> AuthContext:
    method, path, query, headers = wire(request, **extra)
    return authenticate(method, path, query, headers, lookup, now=now)


def key_url(bucket: str, key: str, query: str = "") -> str:
    """The URL botocore builds for a key: UTF-8, percent-encoded, '/' and '~' kept."""
    return f"{ENDPOINT}/{bucket}/{quote(key, safe='/~')}" + (f"?{query}" if query else "")


KEYS = ["plain.txt", "with space.txt", "plus+sign", "100% sure", "ünïcødé/ファイル", "/leading/slash",
        "quest?ion#hash", "tilde~star*paren()", "a//double", "  ", "semi;colon=eq&amp"]
QUERIES = ["", "uploads", "prefix=&delimiter=%2F", "list-type=2&prefix=a%20b&start-after=&encoding-type=url",
           "partNumber=3&uploadId=abc%2Bdef", "tagging=&versionId=null", "prefix=%E2%9C%93%2B%25"]


# --- SigV4: accepted ---------------------------------------------------------------------------------

@pytest.mark.parametrize("key", KEYS)
def test_header_signed_requests_for_awkward_keys_are_accepted(key):
    body = b"hello " + key.encode()
    request = sign("PUT", key_url("bucket", key), {"Content-Type": "text/plain", "x-amz-meta-note": "a  b"}, body)
    ctx = auth(request)
    assert ctx.tenant == "acme" and ctx.access_key == AK and not ctx.presigned
    assert ctx.payload_hash == hashlib.sha256(body).hexdigest()
    assert ctx.seed_signature == request.headers["Authorization"].rsplit("Signature=", 1)[1]
    assert ctx.scope == f"{ctx.amz_date[:8]}/us-east-1/s3/aws4_request" and ctx.region == "us-east-1"


@pytest.mark.parametrize("query", QUERIES)
def test_header_signed_requests_with_raw_query_strings_are_accepted(query):
    request = sign("GET", key_url("bucket", "", query))
    assert auth(request).tenant == "acme"


@pytest.mark.parametrize("key", KEYS)
def test_presigned_urls_for_awkward_keys_are_accepted(key):
    for method in ("GET", "PUT"):
        request = presign(method, key_url("bucket", key, "response-content-type=text%2Fplain"))
        ctx = auth(request)
        assert ctx.presigned and ctx.tenant == "acme" and ctx.payload_hash == "UNSIGNED-PAYLOAD"


def test_aws_documented_presigned_get_is_accepted():
    query = ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3"
             "%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
             "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    headers = Headers({"Host": "examplebucket.s3.amazonaws.com"})
    ctx = authenticate("GET", "/test.txt", query, headers, lookup, now=DOC_NOW + 3600)
    assert ctx.presigned and ctx.seed_signature.startswith("aeeed9bb")
    with pytest.raises(s3e.SignatureDoesNotMatch):
        authenticate("GET", "/test.txt", query.replace("86400", "86401"), headers, lookup, now=DOC_NOW)


def test_any_region_is_accepted_but_the_service_must_be_s3():
    ctx = auth(sign("GET", key_url("bucket", "k"), region="eu-west-3"))
    assert ctx.region == "eu-west-3" and ctx.scope.endswith("/eu-west-3/s3/aws4_request")
    request = AWSRequest(method="GET", url=key_url("bucket", "k"))
    SigV4Auth(Credentials(AK, SECRET), "ec2", "us-east-1").add_auth(request)
    with pytest.raises(s3e.AuthorizationHeaderMalformed, match="service"):
        auth(request, x_amz_content_sha256=EMPTY_SHA256)


def test_a_date_header_may_stand_in_for_x_amz_date():
    request = sign("GET", key_url("bucket", "k"), {"Date": "Thu, 01 Jan 2026 00:00:00 GMT"})
    assert "X-Amz-Date" not in request.headers
    assert auth(request).amz_date[:8] == time.strftime("%Y%m%d", time.gmtime())


def test_non_ascii_header_values_are_canonicalised_as_the_client_signed_them():
    for value in ("café", "ファイル名", "a\u00a0 b"):
        request = sign("PUT", key_url("bucket", "k"), {"x-amz-meta-name": value}, b"x")
        method, path, query, headers = wire(request)
        if all(ord(c) < 256 for c in value):  # botocore sends latin-1 text as latin-1 bytes
            assert authenticate(method, path, query, headers, lookup).tenant == "acme"
        utf8 = Headers(headers)  # a client that sends UTF-8 bytes: WSGI hands them over decoded as latin-1
        utf8["x-amz-meta-name"] = value.encode("utf-8").decode("latin-1")
        assert authenticate(method, path, query, utf8, lookup).tenant == "acme"


def test_expect_100_continue_and_clock_skew_within_fifteen_minutes_are_fine():
    request = sign("PUT", key_url("bucket", "k"), body=b"x")
    assert auth(request, now=time.time() + 14 * 60, Expect="100-continue").tenant == "acme"
    assert auth(request, now=time.time() - 14 * 60).tenant == "acme"


# --- SigV4: refused ----------------------------------------------------------------------------------

def _one_byte_changes(request: AWSRequest):
    method, path, query, headers = wire(request)
    yield "path", (method, path[:-1] + chr(ord(path[-1]) ^ 1), query, headers)
    yield "query", (method, path, query.replace("prefix=a", "prefix=b"), headers)
    yield "method", ("POST", path, query, headers)
    changed = Headers(headers)
    changed["x-amz-meta-note"] = headers["x-amz-meta-note"] + "!"
    yield "header", (method, path, query, changed)
    changed = Headers(headers)
    changed["Host"] = "127.0.0.1:9001"
    yield "host", (method, path, query, changed)


def test_a_one_byte_change_to_a_signed_request_is_refused():
    request = sign("GET", key_url("bucket", "some key", "prefix=a"), {"x-amz-meta-note": "n"})
    assert auth(request).tenant == "acme"
    refused = []
    for what, (method, path, query, headers) in _one_byte_changes(request):
        try:
            authenticate(method, path, query, headers, lookup)
        except s3e.SignatureDoesNotMatch:
            refused.append(what)
    assert refused == ["path", "query", "method", "header", "host"]
    with pytest.raises(s3e.SignatureDoesNotMatch) as err:
        auth(request, lookup=lambda ak: (SECRET[:-1] + "X", "acme"))
    assert err.value.status == 403 and "CanonicalRequest" in err.value.extra


def test_a_tampered_presigned_url_is_refused():
    request = presign("GET", key_url("bucket", "k"))
    method, path, query, headers = wire(request)
    sig_at = query.index("X-Amz-Signature=") + len("X-Amz-Signature=")
    flipped = query[:sig_at] + ("0" if query[sig_at] != "0" else "1") + query[sig_at + 1:]
    for bad in (flipped, query.replace("X-Amz-Expires=3600", "X-Amz-Expires=3601"), query + "&extra=1"):
        with pytest.raises(s3e.SignatureDoesNotMatch):
            authenticate(method, path, bad, headers, lookup)


def test_a_skewed_clock_is_refused():
    request = sign("GET", key_url("bucket", "k"))
    for offset in (16 * 60, -16 * 60):
        with pytest.raises(s3e.RequestTimeTooSkewed) as err:
            auth(request, now=time.time() + offset)
        assert err.value.status == 403 and err.value.extra["MaxAllowedSkewMilliseconds"] == "900000"


def test_an_expired_presigned_url_is_refused_and_expiry_is_bounded():
    request = presign("GET", key_url("bucket", "k"), expires=60)
    assert auth(request, now=time.time() + 55).presigned
    with pytest.raises(s3e.AccessDenied, match="Request has expired") as err:
        auth(request, now=time.time() + 120)
    assert err.value.code == "AccessDenied" and err.value.status == 403
    with pytest.raises(s3e.AccessDenied, match="not valid yet"):
        auth(request, now=time.time() - 20 * 60)
    with pytest.raises(s3e.AuthorizationQueryParametersError):
        auth(presign("GET", key_url("bucket", "k"), expires=604801))


def test_an_unsigned_x_amz_header_is_refused():
    request = sign("PUT", key_url("bucket", "k"), body=b"x")
    with pytest.raises(s3e.AccessDenied, match="x-amz-meta-sneaky"):
        auth(request, x_amz_meta_sneaky="1")
    with pytest.raises(s3e.AccessDenied, match="x-amz-acl"):
        auth(presign("PUT", key_url("bucket", "k")), x_amz_acl="public-read")


class _HostlessSigner(S3SigV4Auth):
    def headers_to_sign(self, request):
        headers = super().headers_to_sign(request)
        del headers["host"]
        return headers


def test_a_request_whose_host_is_not_signed_is_refused():
    request = sign("GET", key_url("bucket", "k"), signer=_HostlessSigner)
    assert "host" not in request.headers["Authorization"]
    with pytest.raises(s3e.AuthorizationHeaderMalformed, match="host"):
        auth(request)


def test_sigv4a_answers_not_implemented():
    method, path, query, headers = wire(sign("PUT", key_url("bucket", "k"), body=b"x"))
    sigv4a = Headers(headers)
    sigv4a["Authorization"] = headers["Authorization"].replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256")
    streaming = Headers(headers)
    streaming["x-amz-content-sha256"] = "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"
    for changed in (sigv4a, streaming):
        with pytest.raises(s3e.FeatureNotImplemented) as err:
            authenticate(method, path, query, changed, lookup)
        assert err.value.status == 501 and err.value.code == "NotImplemented"
    query = wire(presign("GET", key_url("bucket", "k")))[2].replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256")
    with pytest.raises(s3e.FeatureNotImplemented):
        authenticate("GET", "/bucket/k", query, Headers({"Host": "127.0.0.1:9000"}), lookup)


def test_unsigned_sigv2_unknown_key_and_missing_payload_hash_are_refused_clearly():
    host = Headers({"Host": "127.0.0.1:9000"})
    with pytest.raises(s3e.AccessDenied):
        authenticate("GET", "/bucket/k", "", host, lookup)
    v2 = Headers({"Host": "127.0.0.1:9000", "Authorization": f"AWS {AK}:c2lnbmF0dXJl"})
    with pytest.raises(s3e.InvalidRequest, match="Signature Version 4"):
        authenticate("GET", "/bucket/k", "", v2, lookup)
    with pytest.raises(s3e.InvalidAccessKeyId):
        auth(sign("GET", key_url("bucket", "k")), lookup=lambda ak: None)  # unknown or revoked
    request = sign("GET", key_url("bucket", "k"), signer=SigV4Auth)  # signs no x-amz-content-sha256
    with pytest.raises(s3e.MissingSecurityHeader):
        auth(request)
    with pytest.raises(s3e.InvalidArgument, match="x-amz-content-sha256"):
        auth(sign("PUT", key_url("bucket", "k"), signer=_StreamingSigner, mode="SHA256-OF-SOMETHING"))
    broken = Headers({"Host": "h", "Authorization": "AWS4-HMAC-SHA256 Credential=x", "x-amz-date": "20260101T000000Z"})
    with pytest.raises(s3e.AuthorizationHeaderMalformed):
        authenticate("GET", "/", "", broken, lookup)


def boto3_client(endpoint: str = ENDPOINT, **config):
    return botocore.session.get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id=AK, aws_secret_access_key=SECRET,
        config=botocore.config.Config(**config))


def test_boto3_default_presigned_urls_which_are_sigv2_are_accepted():
    client = boto3_client()
    cases = [("get_object", {"Key": "a b+c%/ünï"}, "GET"),
             ("get_object", {"Key": "k", "ResponseContentType": "text/plain", "ResponseContentDisposition": "x y"},
              "GET"),
             ("put_object", {"Key": "up load", "ContentType": "text/csv", "Metadata": {"tag": "v"}}, "PUT"),
             ("upload_part", {"Key": "k", "UploadId": "UP+1", "PartNumber": 2}, "PUT")]
    for operation, params, method in cases:
        url = client.generate_presigned_url(operation, Params={"Bucket": "bucket", **params}, ExpiresIn=60)
        parts = urlsplit(url)
        assert "AWSAccessKeyId=" in parts.query and "X-Amz-Signature" not in parts.query  # boto3's default
        headers = Headers({"Host": parts.netloc})
        ctx = authenticate(method, parts.path, parts.query, headers, lookup)
        assert ctx.tenant == "acme" and ctx.presigned and ctx.signature_version == 2
        assert ctx.payload_hash == "UNSIGNED-PAYLOAD"
        with pytest.raises(s3e.SignatureDoesNotMatch):
            authenticate("DELETE" if method != "DELETE" else "GET", parts.path, parts.query, headers, lookup)
        with pytest.raises(s3e.SignatureDoesNotMatch):
            authenticate(method, parts.path + "x", parts.query, headers, lookup)
        with pytest.raises(s3e.AccessDenied, match="Request has expired"):
            authenticate(method, parts.path, parts.query, headers, lookup, now=time.time() + 120)
    with pytest.raises(s3e.SignatureDoesNotMatch):  # a content type other than the signed one
        url = client.generate_presigned_url("put_object", Params={"Bucket": "b", "Key": "k", "ContentType": "a/b"})
        parts = urlsplit(url)
        authenticate("PUT", parts.path, parts.query, Headers({"Host": parts.netloc, "Content-Type": "c/d"}), lookup)


def test_sigv2_presigned_urls_in_virtual_hosted_style_sign_the_bucket_too():
    client = boto3_client("http://s3.example.test:9000", s3={"addressing_style": "virtual"})
    url = client.generate_presigned_url("get_object", Params={"Bucket": "bucket", "Key": "k y"})
    parts = urlsplit(url)
    assert parts.netloc.startswith("bucket.") and parts.path == "/k%20y"
    headers = Headers({"Host": parts.netloc})
    assert authenticate("GET", parts.path, parts.query, headers, lookup, virtual_bucket="bucket").tenant == "acme"
    with pytest.raises(s3e.SignatureDoesNotMatch):
        authenticate("GET", parts.path, parts.query, headers, lookup)


def test_canonical_query_reencodes_names_and_values_and_sorts_them_as_botocore_does():
    raw = "b=2&a=&a=1&c&space=a%20b&plus=a+b&tilde=%7E&slash=a/b&pct=%2b%25&%E2%9C%93=%E2%9C%93"
    decoded = [("b", "2"), ("a", ""), ("a", "1"), ("c", ""), ("space", "a b"), ("plus", "a+b"), ("tilde", "~"),
               ("slash", "a/b"), ("pct", "+%"), ("✓", "✓")]
    expected = SigV4Auth(Credentials(AK, SECRET), "s3", "us-east-1")._canonical_query_string_params(decoded)
    assert canonical_query(raw) == expected
    assert canonical_query("X-Amz-Signature=abc&a=1", drop_signature=True) == "a=1"


# --- bodies: aws-chunked, from AWS's worked examples ----------------------------------------------

DOC_DATA = b"a" * 66560
DOC_SIGNED_CHUNKS = ("ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
                     "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
                     "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9")
DOC_TRAILER_CHUNKS = ("b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
                      "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
                      "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992")
DOC_TRAILER = b"x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:" \
              b"d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435\r\n"


def doc_headers(trailer: bool) -> Headers:
    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")
    signed = "content-encoding;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;" \
             "x-amz-storage-class;x-amz-trailer" if trailer else \
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;" \
        "x-amz-storage-class"
    seed = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e" if trailer else \
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    headers = Headers({
        "Host": "s3.amazonaws.com", "x-amz-date": "20130524T000000Z", "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "Authorization": f"AWS4-HMAC-SHA256 Credential={AK}/20130524/us-east-1/s3/aws4_request,"
                         f"SignedHeaders={signed},Signature={seed}",
        "x-amz-content-sha256": mode, "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": "66560"})
    if trailer:
        headers["x-amz-trailer"] = "x-amz-checksum-crc32c"
    else:
        headers["Content-Length"] = "66824"
    return headers


def doc_body(signatures, trailer: bytes | None = None, between: bytes = b"\r\n") -> bytes:
    body = (b"10000;chunk-signature=%s\r\n" % signatures[0].encode() + DOC_DATA[:65536] + b"\r\n"
            + b"400;chunk-signature=%s\r\n" % signatures[1].encode() + DOC_DATA[65536:] + b"\r\n"
            + b"0;chunk-signature=%s\r\n" % signatures[2].encode())
    return body + (between if trailer is None else trailer + b"\r\n")


class Trickle(io.RawIOBase):
    """A stream that hands out at most ``step`` bytes per read, as a slow client's body arrives."""

    def __init__(self, data: bytes, step: int):
        self._data, self._pos, self._step = data, 0, step

    def read(self, n: int = -1) -> bytes:
        n = self._step if n is None or n < 0 else min(n, self._step)
        piece = self._data[self._pos:self._pos + n]
        self._pos += len(piece)
        return piece


def read_all(body: bytes, headers, ctx, step: int | None = None,
             max_read: int = 1 << 20) -> tuple[bytes, PayloadReader]:
    reader = PayloadReader(Trickle(body, step) if step else io.BytesIO(body), headers, ctx, max_read=max_read)
    pieces = list(reader)  # held, not copied: they must stay valid as reading goes on
    return b"".join(bytes(p) for p in pieces), reader


def test_aws_documented_chunk_signed_upload_is_accepted_chunk_by_chunk():
    headers = doc_headers(trailer=False)
    ctx = authenticate("PUT", "/examplebucket/chunkObject.txt", "", headers, lookup, now=DOC_NOW)
    assert ctx.seed_signature == "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
    body = doc_body(DOC_SIGNED_CHUNKS)
    assert len(body) == 66824
    for step in (None, 1, 7, 4093, 65540):
        data, reader = read_all(body, headers, ctx, step)
        assert data == DOC_DATA and reader.size == 66560 and reader.trailers == {}


def test_aws_documented_upload_with_a_signed_trailer_is_accepted():
    headers = doc_headers(trailer=True)
    ctx = authenticate("PUT", "/examplebucket/chunkObject.txt", "", headers, lookup, now=DOC_NOW)
    assert ctx.seed_signature == "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
    # as AWS's SDKs frame it, with a blank line before the trailer, and with LF-ended trailer lines
    for body in (doc_body(DOC_TRAILER_CHUNKS, DOC_TRAILER), doc_body(DOC_TRAILER_CHUNKS, b"\r\n" + DOC_TRAILER),
                 doc_body(DOC_TRAILER_CHUNKS, DOC_TRAILER.replace(b"==\r\n", b"==\n\r\n"))):
        for step in (None, 3):
            data, reader = read_all(body, headers, ctx, step)
            assert data == DOC_DATA
            assert reader.checksum == ("CRC32C", "sOO8/Q==") == ("CRC32C", checksums.compute("CRC32C", DOC_DATA))
            assert reader.trailers == {"x-amz-checksum-crc32c": "sOO8/Q=="}


def test_aws_documented_upload_refuses_a_tampered_chunk_final_chunk_length_or_trailer():
    plain, trailed = doc_headers(False), doc_headers(True)
    ctx = authenticate("PUT", "/examplebucket/chunkObject.txt", "", plain, lookup, now=DOC_NOW)
    tctx = authenticate("PUT", "/examplebucket/chunkObject.txt", "", trailed, lookup, now=DOC_NOW)
    body = doc_body(DOC_SIGNED_CHUNKS)
    tampered = body.replace(b"\r\naaaa", b"\r\nbaaa", 1)
    final = body.replace(DOC_SIGNED_CHUNKS[2].encode(), DOC_SIGNED_CHUNKS[2][:-1].encode() + b"0")
    for bad in (tampered, final):
        with pytest.raises(s3e.SignatureDoesNotMatch):
            read_all(bad, plain, ctx)
    short = Headers(plain)
    short["x-amz-decoded-content-length"] = "66559"
    with pytest.raises(s3e.IncompleteBody):
        read_all(body, short, ctx)
    long = Headers(plain)
    long["x-amz-decoded-content-length"], long["Content-Length"] = "66561", str(len(body))
    with pytest.raises(s3e.IncompleteBody):
        read_all(body, long, ctx)
    with pytest.raises(s3e.IncompleteBody):
        read_all(body[:-10], plain, ctx)  # the connection closed early
    wrong_sig = doc_body(DOC_TRAILER_CHUNKS, DOC_TRAILER.replace(b"signature:d81", b"signature:d80"))
    with pytest.raises(s3e.SignatureDoesNotMatch):
        read_all(wrong_sig, trailed, tctx)
    swapped = doc_body(DOC_TRAILER_CHUNKS, DOC_TRAILER.replace(b"sOO8/Q==", b"AAAAAA=="))
    with pytest.raises(s3e.SignatureDoesNotMatch):  # the trailer is signed: a changed checksum fails first
        read_all(swapped, trailed, tctx)
    unsigned = doc_body(DOC_TRAILER_CHUNKS, DOC_TRAILER.split(b"x-amz-trailer-signature")[0])
    with pytest.raises(s3e.SignatureDoesNotMatch):
        read_all(unsigned, trailed, tctx)


# --- bodies: aws-chunked from a generator written from the specification ----------------------

def chunk_signature(ctx: AuthContext, previous: str, data: bytes) -> str:
    to_sign = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", ctx.amz_date, ctx.scope, previous, EMPTY_SHA256,
                         hashlib.sha256(data).hexdigest()])
    return hmac.new(ctx.signing_key, to_sign.encode(), hashlib.sha256).hexdigest()


def aws_chunked(data: bytes, chunk: int, ctx: AuthContext | None, trailer: dict[str, str] | None = None) -> bytes:
    """Encode ``data`` as aws-chunked: signed when ``ctx`` is given, with a (signed) trailer when asked."""
    out, previous = [], ctx.seed_signature if ctx else ""
    for start in [*range(0, len(data), chunk), len(data)]:
        piece = data[start:start + chunk]
        if ctx is None:
            out.append(b"%x\r\n" % len(piece))
        else:
            previous = chunk_signature(ctx, previous, piece)
            out.append(b"%x;chunk-signature=%s\r\n" % (len(piece), previous.encode()))
        if piece:
            out.append(piece + b"\r\n")
        if not piece:
            break
    if trailer is None:
        return b"".join(out) + b"\r\n"
    lines = "".join(f"{k}:{v}\n" for k, v in trailer.items())
    out.append(lines.replace("\n", "\r\n").encode())
    if ctx is not None:
        to_sign = "\n".join(["AWS4-HMAC-SHA256-TRAILER", ctx.amz_date, ctx.scope, previous,
                             hashlib.sha256(lines.encode()).hexdigest()])
        out.append(b"x-amz-trailer-signature:%s\r\n" % hmac.new(ctx.signing_key, to_sign.encode(),
                                                                 hashlib.sha256).hexdigest().encode())
    return b"".join(out) + b"\r\n"


class _StreamingSigner(S3SigV4Auth):
    """botocore's S3 signer with a streaming x-amz-content-sha256 instead of the body's hash."""

    def __init__(self, credentials, service_name, region_name, mode):
        super().__init__(credentials, service_name, region_name)
        self.mode = mode

    def payload(self, request):
        return self.mode


def streaming_request(mode: str, data: bytes, trailer_algorithm: str | None = None, **headers: str):
    """A request signed by botocore that announces an aws-chunked body (no Content-Length: HTTP chunked)."""
    fields = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(data)), **headers}
    if trailer_algorithm:
        fields["x-amz-trailer"] = checksums.header_name(trailer_algorithm)
    request = sign("PUT", key_url("bucket", "big object"), fields, signer=_StreamingSigner, mode=mode)
    assert request.headers["X-Amz-Content-SHA256"] == mode
    method, path, query, wire_headers = wire(request)
    return authenticate(method, path, query, wire_headers, lookup), wire_headers


@pytest.mark.parametrize("size,chunk", [(0, 65536), (1, 65536), (65536, 65536), (3 * (1 << 20) + 17, 65536),
                                        (2_500_000, 1 << 20), (100_000, 8192)])
def test_generated_signed_streams_decode_byte_exact(size, chunk):
    data = random.Random(size).randbytes(size)
    ctx, headers = streaming_request("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", data)
    body = aws_chunked(data, chunk, ctx)
    for step in (None, 9973):
        decoded, reader = read_all(body, headers, ctx, step)
        assert decoded == data and reader.size == size


def test_generated_signed_stream_with_signed_crc64nvme_trailer_is_verified():
    data = random.Random(5).randbytes(300_000)
    ctx, headers = streaming_request("STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", data, "CRC64NVME")
    good = checksums.compute("CRC64NVME", data)
    decoded, reader = read_all(aws_chunked(data, 65536, ctx, {"x-amz-checksum-crc64nvme": good}), headers, ctx)
    assert decoded == data and reader.checksum == ("CRC64NVME", good)
    bad = checksums.compute("CRC64NVME", data + b"!")  # correctly signed, but not this body's checksum
    with pytest.raises(s3e.BadDigest, match="The CRC64NVME you specified did not match the calculated checksum."):
        read_all(aws_chunked(data, 65536, ctx, {"x-amz-checksum-crc64nvme": bad}), headers, ctx)
    with pytest.raises(s3e.InvalidRequest, match="trailer"):
        read_all(aws_chunked(data, 65536, ctx, {}), headers, ctx)


def test_generated_signed_stream_refuses_tampering_reordering_and_a_missing_final_chunk():
    data = random.Random(6).randbytes(200_000)
    ctx, headers = streaming_request("STREAMING-AWS4-HMAC-SHA256-PAYLOAD", data)
    body = aws_chunked(data, 65536, ctx)
    flipped = bytearray(body)
    flipped[150_000] ^= 1
    with pytest.raises(s3e.SignatureDoesNotMatch):
        read_all(bytes(flipped), headers, ctx)
    other = AuthContext(**{**ctx.__dict__, "seed_signature": "0" * 64})
    with pytest.raises(s3e.SignatureDoesNotMatch):  # chunks of another request
        read_all(aws_chunked(data, 65536, other), headers, ctx)
    without_final = body[:body.rindex(b"0;chunk-signature=")]
    with pytest.raises(s3e.IncompleteBody):
        read_all(without_final, headers, ctx)
    unsigned = aws_chunked(data, 65536, None)
    with pytest.raises(s3e.SignatureDoesNotMatch):
        read_all(unsigned, headers, ctx)


@pytest.mark.parametrize("algorithm,cls", [("CRC32", CrtCrc32Checksum), ("CRC32C", CrtCrc32cChecksum),
                                           ("CRC64NVME", CrtCrc64NvmeChecksum)])
def test_botocore_unsigned_trailer_bodies_are_decoded_and_their_checksum_verified(algorithm, cls):
    data = random.Random(7).randbytes(2 * (1 << 20) + 5)
    name = checksums.header_name(algorithm)
    body = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=cls, checksum_name=name, chunk_size=1 << 20).read()
    ctx, headers = streaming_request("STREAMING-UNSIGNED-PAYLOAD-TRAILER", data, algorithm)
    for step in (None, 1000):
        decoded, reader = read_all(body, headers, ctx, step)
        assert decoded == data and reader.checksum == (algorithm, checksums.compute(algorithm, data))
    wrong = body.replace(checksums.compute(algorithm, data).encode(), checksums.compute(algorithm, b"x").encode())
    with pytest.raises(s3e.BadDigest, match=f"The {algorithm} you specified did not match"):
        read_all(wrong, headers, ctx)
    # the last trailer line may end in "\n\r\n"
    assert read_all(body[:-4] + b"\n\r\n", headers, ctx)[0] == data


def test_chunked_pieces_are_slices_of_large_reads_not_copies():
    data = random.Random(8).randbytes(4 * (1 << 20))
    ctx, headers = streaming_request("STREAMING-UNSIGNED-PAYLOAD-TRAILER", data, "CRC32")
    body = aws_chunked(data, 1 << 20, None, {"x-amz-checksum-crc32": checksums.compute("CRC32", data)})
    reader = PayloadReader(io.BytesIO(body), headers, ctx)
    pieces = list(reader)
    assert all(isinstance(p, memoryview) and p.readonly for p in pieces)
    assert len(pieces) <= 12 and max(len(p) for p in pieces) <= 1 << 20
    assert b"".join(pieces) == data


def test_malformed_chunk_framing_is_a_client_error():
    ctx, headers = streaming_request("STREAMING-UNSIGNED-PAYLOAD-TRAILER", b"abc")
    for bad in (b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcX0\r\n\r\n", b"3" * 5000, b"3\r\nab"):
        with pytest.raises((s3e.InvalidRequest, s3e.IncompleteBody)) as err:
            read_all(bad, headers, ctx)
        assert err.value.status == 400


# --- bodies: plain -------------------------------------------------------------------------------

def test_plain_body_is_checked_against_its_signed_sha256():
    body = random.Random(9).randbytes(3_000_000)
    request = sign("PUT", key_url("bucket", "k"), {"Content-Length": str(len(body))}, body)
    ctx = auth(request)
    decoded, reader = read_all(body, wire(request)[3], ctx)
    assert decoded == body and reader.size == len(body) and reader.checksum is None
    swapped = body[:-1] + bytes([body[-1] ^ 1])
    with pytest.raises(s3e.XAmzContentSHA256Mismatch):
        read_all(swapped, wire(request)[3], ctx)
    with pytest.raises(s3e.IncompleteBody):
        read_all(body[:-1], wire(request)[3], ctx)


def test_plain_body_reads_no_more_than_content_length_and_works_without_it():
    headers = Headers({"Content-Length": "5", "Expect": "100-continue"})
    stream = io.BytesIO(b"hello, and the next request")
    assert b"".join(PayloadReader(stream, headers, None)) == b"hello" and stream.tell() == 5
    reader = PayloadReader(io.BytesIO(b"x" * 10), Headers({"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}), None, 3)
    assert [bytes(p) for p in reader] == [b"xxx", b"xxx", b"xxx", b"x"] and reader.size == 10


@pytest.mark.parametrize("algorithm", checksums.ALGORITHMS)
def test_checksum_headers_are_verified(algorithm):
    body = b"The quick brown fox jumps over the lazy dog"
    value = checksums.compute(algorithm, body)
    headers = Headers({checksums.header_name(algorithm): value, "x-amz-sdk-checksum-algorithm": algorithm})
    decoded, reader = read_all(body, headers, None)
    assert decoded == body and reader.checksum == (algorithm, value)
    with pytest.raises(s3e.BadDigest) as err:
        read_all(body + b".", headers, None)
    assert err.value.message == f"The {algorithm} you specified did not match the calculated checksum."
    with pytest.raises(s3e.BadDigest):  # a value that is no digest of this algorithm never matches
        read_all(body, Headers({checksums.header_name(algorithm): "not base64!"}), None)


def test_checksum_vectors_match_the_published_check_values():
    check = b"123456789"
    digest = {a: base64.b64decode(checksums.compute(a, check)) for a in checksums.ALGORITHMS}
    assert digest["CRC32"] == (0xCBF43926).to_bytes(4, "big")
    assert digest["CRC32C"] == (0xE3069283).to_bytes(4, "big")
    assert digest["CRC64NVME"] == (0xAE8B14860A799888).to_bytes(8, "big")
    assert digest["SHA1"] == hashlib.sha1(check).digest() and digest["SHA256"] == hashlib.sha256(check).digest()
    incremental = checksums.Checksum("crc64nvme")
    for i in range(0, len(check), 2):
        incremental.update(memoryview(check)[i:i + 2])
    assert incremental.digest() == digest["CRC64NVME"]


def test_sdk_checksum_algorithm_alone_means_compute_it_and_conflicts_are_refused():
    body = b"x" * 1000
    _, reader = read_all(body, Headers({"x-amz-sdk-checksum-algorithm": "crc32c"}), None)
    assert reader.checksum == ("CRC32C", checksums.compute("CRC32C", body))
    both = Headers({"x-amz-checksum-crc32": checksums.compute("CRC32", body),
                    "x-amz-checksum-sha1": checksums.compute("SHA1", body)})
    for headers in (both, Headers({"x-amz-sdk-checksum-algorithm": "SHA256",
                                   "x-amz-checksum-crc32": checksums.compute("CRC32", body)}),
                    Headers({"x-amz-sdk-checksum-algorithm": "MD4"}),
                    Headers({"x-amz-trailer": "x-amz-checksum-crc32"})):  # a trailer a plain body cannot carry
        with pytest.raises(s3e.InvalidRequest):
            PayloadReader(io.BytesIO(body), headers, None)
    _, reader = read_all(body, Headers({"x-amz-checksum-type": "FULL_OBJECT"}), None)
    assert reader.checksum is None


def test_content_md5_is_verified_when_sent():
    body = b"delete me"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    _, reader = read_all(body, Headers({"Content-MD5": md5}), None)
    assert reader.md5_hex == hashlib.md5(body).hexdigest()
    _, reader = read_all(body, Headers(), None)
    assert reader.md5_hex is None
    with pytest.raises(s3e.BadDigest):
        read_all(body + b"!", Headers({"Content-MD5": md5}), None)
    with pytest.raises(s3e.InvalidDigest):
        PayloadReader(io.BytesIO(body), Headers({"Content-MD5": "abc"}), None)


# --- XML: parsing ----------------------------------------------------------------------------------

def test_complete_multipart_parses_with_or_without_namespace_and_strips_etag_quotes():
    for ns in ("", f' xmlns="{xmlio.NS}"'):
        body = (f'<CompleteMultipartUpload{ns}><Part><PartNumber>1</PartNumber><ETag>"abc"</ETag>'
                f'<ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part><Part><ETag>&quot;def&quot;</ETag>'
                f'<PartNumber>3</PartNumber></Part></CompleteMultipartUpload>').encode()
        parts = xmlio.parse_complete_multipart(body)
        assert parts == [(1, "abc", {"CRC32": "AAAAAA=="}), (3, "def", {})]
        assert parts[1].part_number == 3 and parts[1].etag == "def"


def test_delete_parses_keys_exactly_and_quiet_mode():
    keys = ["a & b", "ünï/código", "  spaced  ", "<tag>", "x\ty"]
    objects = "".join(f"<Object><Key>{xmlio.escape(k)}</Key><VersionId>v1</VersionId></Object>" for k in keys)
    request = xmlio.parse_delete(f'<Delete xmlns="{xmlio.NS}"><Quiet>true</Quiet>{objects}</Delete>'.encode())
    assert request.quiet is True and request.keys == keys
    assert request.versions == ["v1"] * len(keys)
    assert xmlio.parse_delete(b"<Delete><Object><Key>k</Key></Object></Delete>")[:2] == (False, ["k"])


def test_create_bucket_configuration_gives_the_location_constraint():
    assert xmlio.parse_create_bucket(b"") is None
    assert xmlio.parse_create_bucket(
        f'<CreateBucketConfiguration xmlns="{xmlio.NS}"><LocationConstraint>eu-west-1</LocationConstraint>'
        f'</CreateBucketConfiguration>'.encode()) == "eu-west-1"
    assert xmlio.parse_create_bucket(b"<CreateBucketConfiguration/>") is None


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Delete><Object><Key>&lol3;</Key></Object></Delete>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><Delete><Object><Key>&xxe;</Key></Object></Delete>"""


@pytest.mark.parametrize("body", [
    BILLION_LAUGHS, EXTERNAL_ENTITY, b"", b"not xml", b"<Delete><Object><Key>k</Key></Object>",
    b"<Other><Object><Key>k</Key></Object></Other>", b"<Delete></Delete>", b"<Delete><Object/></Delete>",
    b"<Delete><Quiet>maybe</Quiet><Object><Key>k</Key></Object></Delete>",
    b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>",
    b"<Delete>" + b" " * (3 << 20) + b"</Delete>",
])
def test_hostile_or_malformed_delete_bodies_are_malformed_xml(body):
    with pytest.raises(s3e.MalformedXML) as err:
        xmlio.parse_delete(body)
    assert err.value.status == 400


@pytest.mark.parametrize("body", [
    BILLION_LAUGHS.replace(b"Delete", b"CompleteMultipartUpload"), b"<CompleteMultipartUpload/>",
    b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>e</ETag></Part></CompleteMultipartUpload>",
    b"<CompleteMultipartUpload><Part><PartNumber>0</PartNumber><ETag>e</ETag></Part></CompleteMultipartUpload>",
    b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
    b"<CreateBucketConfiguration>",
])
def test_hostile_or_malformed_other_bodies_are_malformed_xml(body):
    parse = xmlio.parse_create_bucket if b"CreateBucket" in body else xmlio.parse_complete_multipart
    with pytest.raises(s3e.MalformedXML):
        parse(body)


def test_read_limited_refuses_a_body_past_its_limit():
    assert xmlio.read_limited([b"ab", memoryview(b"cd")], 4) == b"abcd"
    with pytest.raises(s3e.MalformedXML):
        xmlio.read_limited([b"ab", b"cde"], 4)


# --- XML: answers, parsed by a botocore client ---------------------------------------------------

class _Raw:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_):
        yield self._body


def botocore_parse(operation: str, xml: bytes, status: int = 200, **params):
    """What boto3 makes of ``xml`` as the answer to ``operation`` (and the URL it asked)."""
    client = botocore.session.get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=ENDPOINT, aws_access_key_id=AK, aws_secret_access_key=SECRET)
    sent = {}

    def respond(request, **_):
        sent["url"] = request.url
        return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Raw(xml))

    client.meta.events.register("before-send", respond)
    result = getattr(client, operation)(**params)
    result.pop("ResponseMetadata", None)
    return result, sent["url"]


ODD_KEYS = ["plain", "with space", "plus+sign", "100%", "%2B literally", "ünïcødé/ファイル", "/leading", "a&b<c>",
            "tab\there", "cr\rlf\n", "emoji 🦆", "ctl\x01char", "?#[]", "trailing "]


def test_list_objects_v2_with_url_encoding_round_trips_every_key_through_botocore():
    entries = [xmlio.ObjectEntry(k, 1795624769.0, "d41d8cd98f00b204e9800998ecf8427e", i)
               for i, k in enumerate(sorted(ODD_KEYS))]
    xml = xmlio.list_objects_v2_xml("bucket", entries, ["dir one/", "dir+two/"], prefix="", delimiter="/",
                                    max_keys=1000, start_after="a b", encoding_type="url")
    result, url = botocore_parse("list_objects_v2", xml, Bucket="bucket", Delimiter="/", StartAfter="a b")
    assert "encoding-type=url" in url
    assert [o["Key"] for o in result["Contents"]] == sorted(ODD_KEYS)
    assert [p["Prefix"] for p in result["CommonPrefixes"]] == ["dir one/", "dir+two/"]
    assert result["StartAfter"] == "a b" and result["KeyCount"] == len(ODD_KEYS) + 2
    assert result["Contents"][0]["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    assert result["Contents"][0]["LastModified"].timestamp() == 1795624769.0 and "Owner" not in result["Contents"][0]


def test_list_objects_v1_and_versions_round_trip_keys_markers_and_owner():
    owner = xmlio.Owner("a" * 64, "acme")
    entries = [xmlio.ObjectEntry(k, 1795624769.0, "etag", 1) for k in ("a b", "c+d", "e%f")]
    xml = xmlio.list_objects_v1_xml("bucket", entries, ["p q/"], prefix="", delimiter="/", marker="0 0",
                                    next_marker="e%f", is_truncated=True, encoding_type="url", owner=owner)
    result, _ = botocore_parse("list_objects", xml, Bucket="bucket", Delimiter="/", Marker="0 0")
    assert [o["Key"] for o in result["Contents"]] == ["a b", "c+d", "e%f"]
    assert result["NextMarker"] == "e%f" and result["Marker"] == "0 0" and result["IsTruncated"] is True
    assert result["Contents"][0]["Owner"] == {"ID": "a" * 64, "DisplayName": "acme"}
    xml = xmlio.list_versions_xml("bucket", entries, [], key_marker="", encoding_type="url", owner=owner)
    result, _ = botocore_parse("list_object_versions", xml, Bucket="bucket")
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in result["Versions"]] == \
        [("a b", "null", True), ("c+d", "null", True), ("e%f", "null", True)]


def test_keys_xml_cannot_carry_are_refused_unless_url_encoded_and_cr_survives_plain_xml():
    entries = [xmlio.ObjectEntry("ctl\x01char", 0.0, "e", 1)]
    with pytest.raises(s3e.InvalidArgument, match="encoding-type=url"):
        xmlio.list_objects_v2_xml("bucket", entries, [])
    assert b"ctl%01char" in xmlio.list_objects_v2_xml("bucket", entries, [], encoding_type="url")
    xml = xmlio.list_objects_v1_xml("bucket", [xmlio.ObjectEntry("cr\rlf\n&<", 0.0, "e", 1)], [])
    result, _ = botocore_parse("list_objects", xml, Bucket="bucket", EncodingType="url")
    assert result["Contents"][0]["Key"] == "cr\rlf\n&<"  # botocore decodes only when EncodingType is echoed
    with pytest.raises(s3e.InvalidArgument):
        xmlio.check_encoding_type("base64")


def test_bucket_multipart_copy_and_delete_answers_parse_in_botocore():
    owner = xmlio.Owner("id1", "acme")
    xml = xmlio.list_buckets_xml(owner, [xmlio.BucketEntry("alpha", 1795624769.5), xmlio.BucketEntry("beta", 0)])
    result, _ = botocore_parse("list_buckets", xml)
    assert [b["Name"] for b in result["Buckets"]] == ["alpha", "beta"] and result["Owner"]["DisplayName"] == "acme"
    assert botocore_parse("get_bucket_location", xmlio.location_xml("us-east-1"), Bucket="b")[0] == \
        {"LocationConstraint": None}
    assert botocore_parse("get_bucket_location", xmlio.location_xml("eu-west-1"), Bucket="b")[0] == \
        {"LocationConstraint": "eu-west-1"}
    assert botocore_parse("get_bucket_versioning", xmlio.versioning_xml(), Bucket="b")[0] == {}
    result, _ = botocore_parse("create_multipart_upload", xmlio.initiate_multipart_xml("b", "k y", "UP1"),
                               Bucket="b", Key="k y")
    assert (result["Bucket"], result["Key"], result["UploadId"]) == ("b", "k y", "UP1")
    result, _ = botocore_parse("complete_multipart_upload", xmlio.complete_multipart_xml(
        "http://h/b/k", "b", "k", "abc-2", {"CRC32": "AAAAAA=="}), Bucket="b", Key="k", UploadId="UP1",
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]})
    assert result["ETag"] == '"abc-2"' and result["ChecksumCRC32"] == "AAAAAA=="
    assert result["Location"] == "http://h/b/k"
    parts = [xmlio.PartEntry(1, 1795624769.0, "p1", 5 << 20), xmlio.PartEntry(3, 1795624770.0, '"p3"', 7)]
    result, _ = botocore_parse("list_parts", xmlio.list_parts_xml("b", "k", "UP1", parts, owner=owner,
                                                                  is_truncated=True, next_part_number_marker=3),
                               Bucket="b", Key="k", UploadId="UP1")
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in result["Parts"]] == [(1, '"p1"', 5 << 20), (3, '"p3"', 7)]
    assert result["NextPartNumberMarker"] == 3 and result["IsTruncated"] is True
    uploads = [xmlio.UploadEntry("a b", "UP1", 1795624769.0), xmlio.UploadEntry("c+d", "UP2", 1795624770.0)]
    result, _ = botocore_parse("list_multipart_uploads", xmlio.list_uploads_xml("b", uploads, [], owner=owner),
                               Bucket="b")
    assert [(u["Key"], u["UploadId"]) for u in result["Uploads"]] == [("a b", "UP1"), ("c+d", "UP2")]
    result, _ = botocore_parse("copy_object", xmlio.copy_object_xml("e1", 1795624769.0), Bucket="b", Key="k",
                               CopySource="b/src")
    assert result["CopyObjectResult"]["ETag"] == '"e1"'
    result, _ = botocore_parse("upload_part_copy", xmlio.copy_part_xml("e2", 1795624769.0), Bucket="b", Key="k",
                               CopySource="b/src", UploadId="UP1", PartNumber=1)
    assert result["CopyPartResult"]["ETag"] == '"e2"'
    errors = [xmlio.DeleteError("bad key", "AccessDenied", "Access Denied")]
    for quiet in (False, True):
        result, _ = botocore_parse("delete_objects", xmlio.delete_result_xml(["a & b", "c"], errors, quiet),
                                   Bucket="b", Delete={"Objects": [{"Key": "a & b"}], "Quiet": quiet})
        assert result.get("Deleted", []) == ([] if quiet else [{"Key": "a & b"}, {"Key": "c"}])
        assert result["Errors"] == [{"Key": "bad key", "Code": "AccessDenied", "Message": "Access Denied"}]


def test_answers_carry_the_s3_namespace_and_s3_times():
    root = ElementTree.fromstring(xmlio.copy_object_xml("e", 1795624769.671))
    assert root.tag == f"{{{xmlio.NS}}}CopyObjectResult"
    assert root.find(f"{{{xmlio.NS}}}LastModified").text == "2026-11-25T16:39:29.000Z"
    assert root.find(f"{{{xmlio.NS}}}ETag").text == '"e"'


def test_url_encoding_of_keys_round_trips_through_botocores_decoder():
    from botocore.compat import unquote_str
    for key in ODD_KEYS + ["a+b c", "100%25", "~user/x"]:
        encoded = xmlio.url_encode_key(key)
        assert unquote_str(encoded) == key and "+" not in encoded and " " not in encoded
    assert xmlio.url_encode_key("a b+c") == "a%20b%2Bc"


# --- errors -------------------------------------------------------------------------------------------

BRIEF_CODES = {
    "AccessDenied": 403, "SignatureDoesNotMatch": 403, "InvalidAccessKeyId": 403, "RequestTimeTooSkewed": 403,
    "AuthorizationHeaderMalformed": 400, "AuthorizationQueryParametersError": 400, "MissingSecurityHeader": 400,
    "ExpiredToken": 400, "XAmzContentSHA256Mismatch": 400, "BadDigest": 400, "InvalidDigest": 400,
    "InvalidRequest": 400, "IncompleteBody": 400, "MalformedXML": 400, "InvalidArgument": 400,
    "InvalidBucketName": 400, "BucketAlreadyExists": 409, "BucketAlreadyOwnedByYou": 409, "BucketNotEmpty": 409,
    "NoSuchBucket": 404, "NoSuchKey": 404, "NoSuchUpload": 404, "InvalidPart": 400, "InvalidPartOrder": 400,
    "EntityTooSmall": 400, "EntityTooLarge": 400, "PreconditionFailed": 412, "NotModified": 304,
    "InvalidRange": 416, "MethodNotAllowed": 405, "NotImplemented": 501, "SlowDown": 503,
    "ServiceUnavailable": 503, "InternalError": 500, "KeyTooLongError": 400, "MissingContentLength": 411,
    "InvalidObjectState": 403, "NoSuchVersion": 404, "IllegalVersioningConfigurationException": 400,
    "InvalidBucketState": 409, "InvalidRetentionPeriod": 400, "ObjectLockConfigurationNotFoundError": 404,
    "NoSuchObjectLockConfiguration": 404,
}


def test_every_s3_error_code_has_its_aws_status():
    for code, status in BRIEF_CODES.items():
        err = s3e.S3Error.for_code(code)
        assert (err.code, err.status) == (code, status) and err.message
    assert s3e.S3Error.for_code("NoSuchThing").code == "InternalError"


def _domain_classes():
    pending, seen = [domain.StoreError], []
    while pending:
        cls = pending.pop()
        seen.append(cls)
        pending.extend(cls.__subclasses__())
    return [c for c in seen if c.__module__ == domain.__name__]


def test_every_domain_error_maps_to_an_s3_error_through_the_one_table():
    for code, (s3_code, status) in s3e.DOMAIN_TO_S3.items():
        assert BRIEF_CODES[s3_code] == status, code
    for cls in _domain_classes():
        if cls is domain.StoreError:
            continue
        assert cls.code in s3e.DOMAIN_TO_S3, cls
        exc = cls("c" * 64, "node-1", "gone") if cls is domain.ChunkUnavailable else cls("what happened")
        err = s3e.s3_error_for(exc)
        assert (err.code, err.status) == s3e.DOMAIN_TO_S3[cls.code]
        assert err.message == exc.message or err.code == "InternalError"
    for code in ("no_such_bucket", "no_such_key", "bucket_exists", "bucket_not_empty", "no_such_upload",
                 "invalid_part", "invalid_part_order", "entity_too_small", "precondition_failed",
                 "invalid_bucket_name", "key_too_long", "invalid_key", "client_disconnected"):
        assert code in s3e.DOMAIN_TO_S3
    future = type("Future", (domain.BadRequest,), {"code": "something_new"})
    assert s3e.s3_error_for(future("x")).code == "InvalidRequest"
    busy = s3e.s3_error_for(domain.ChunkBusy())
    assert busy.status == 503 and busy.retry_after == domain.ChunkBusy.retry_after


def test_error_xml_is_the_aws_error_document():
    body = s3e.error_xml(s3e.NoSuchKey(Key="a<b"), "/bucket/a<b", "REQ1")
    root = ElementTree.fromstring(body)
    assert root.tag == "Error" and [c.tag for c in root] == ["Code", "Message", "Key", "Resource", "RequestId"]
    assert root.findtext("Code") == "NoSuchKey" and root.findtext("Resource") == "/bucket/a<b"
    assert root.findtext("RequestId") == "REQ1"
    assert s3e.error_xml(s3e.NotModified(), "/b/k", "R") == b""
    odd = ElementTree.fromstring(s3e.error_xml(s3e.AccessDenied("no \x01 here"), "/b/\x02", "R"))
    assert odd.findtext("Message") == "no \ufffd here"


def test_botocore_reads_our_error_answers():
    body = s3e.error_xml(s3e.NoSuchBucket(BucketName="gone"), "/gone", "REQ2")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        botocore_parse("list_objects_v2", body, status=404, Bucket="gone")
    assert err.value.response["Error"]["Code"] == "NoSuchBucket"
    assert err.value.response["Error"]["BucketName"] == "gone"


# --- names ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["abc", "my-bucket.v2", "a" * 63, "0-9", "xn-ok", "bucket-s3alias2"])
def test_valid_bucket_names_are_accepted(name):
    assert valid_bucket_name(name) == name


@pytest.mark.parametrize("name", ["ab", "a" * 64, "Upper", "under_score", "-start", "end-", ".dot", "dot.",
                                  "a..b", "192.168.1.1", "xn--punycode", "bucket-s3alias", "sthree-x",
                                  "x--ol-s3", "sp ace", "ünï", "", None])
def test_invalid_bucket_names_are_refused_with_invalid_bucket_name(name):
    with pytest.raises(domain.InvalidBucketName) as err:
        valid_bucket_name(name)
    assert err.value.code == "invalid_bucket_name" and s3e.s3_error_for(err.value).code == "InvalidBucketName"


def test_keys_are_one_to_1024_bytes_of_utf8():
    assert valid_key("k") == "k" and valid_key("é" * 512) == "é" * 512  # 1024 bytes
    with pytest.raises(domain.KeyTooLong) as err:
        valid_key("é" * 512 + "x")
    assert s3e.s3_error_for(err.value).code == "KeyTooLongError"
    for bad in ("", "\udc80", None):
        with pytest.raises(domain.InvalidKey):
            valid_key(bad)


# --- credentials ----------------------------------------------------------------------------------------

def test_s3_credentials_are_created_looked_up_listed_and_revoked(store):
    creds = S3Credentials(store.meta, "server secret one")
    access_key_id, secret = creds.create("acme")
    assert len(access_key_id) == 20 and access_key_id.startswith("AKMS") and access_key_id[4:].isalnum()
    assert access_key_id[4:] == access_key_id[4:].upper() and len(secret) == 40
    assert creds.lookup(access_key_id) == (secret, "acme")
    other_id, other_secret = creds.create("globex")
    assert other_id != access_key_id and creds.lookup(other_id) == (other_secret, "globex")
    listed = creds.list()
    assert [(k.access_key_id, k.tenant, k.active) for k in listed] == [(access_key_id, "acme", True),
                                                                      (other_id, "globex", True)]
    assert secret not in json.dumps([k.to_json() for k in listed])
    assert creds.revoke(access_key_id).active is False
    assert creds.lookup(access_key_id) is None and creds.lookup(other_id) == (other_secret, "globex")
    assert creds.lookup("AKMS0000000000000000") is None and creds.lookup("nonsense") is None
    with pytest.raises(domain.NotFound):
        creds.revoke("AKMS0000000000000000")
    with pytest.raises(domain.BadRequest):
        creds.create("../evil")


def test_s3_secrets_are_not_stored_in_plaintext_and_a_wrong_server_key_is_a_clear_error(store):
    access_key_id, secret = S3Credentials(store.meta, "the right key").create("acme")
    doc = store.meta.db.s3_credentials.find_one({"_id": access_key_id})
    dumped = json.dumps(doc, default=str)
    assert secret not in dumped and base64.b64encode(secret.encode()).decode() not in dumped
    with pytest.raises(domain.ServerSecretError, match="MINIS3_SECRET_KEY"):
        S3Credentials(store.meta, "the wrong key").lookup(access_key_id)
    with pytest.raises(domain.ServerSecretError):
        S3Credentials(store.meta, "").lookup(access_key_id)
    # a sealed secret moved onto another record does not open there
    other_id, _ = S3Credentials(store.meta, "the right key").create("globex")
    store.meta.db.s3_credentials.update_one({"_id": other_id}, {"$set": {"nonce": doc["nonce"],
                                                                     "ciphertext": doc["ciphertext"]}})
    with pytest.raises(domain.ServerSecretError):
        S3Credentials(store.meta, "the right key").lookup(other_id)
    assert s3e.s3_error_for(domain.ServerSecretError()).status == 500


def test_server_secret_is_created_once_private_and_kept(tmp_path):
    key = load_or_create(tmp_path / "var")
    path = tmp_path / "var" / "secret.key"
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create(tmp_path / "var") == key and path.read_text().strip() == key
    assert [p.name for p in (tmp_path / "var").iterdir()] == ["secret.key"]
    path.write_text("")  # an empty file left by a crash is replaced
    assert load_or_create(tmp_path / "var") not in ("", key)


def test_keys_cli_creates_lists_and_revokes_s3_keys(settings, store):
    env = {**os.environ, **settings.to_env()}

    def minis3(*args):
        return subprocess.run([str(BIN / "minis3"), "keys", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)

    api = minis3("create", "--tenant", "acme")
    created = minis3("create", "--tenant", "acme", "--s3")
    assert api.returncode == 0 and created.returncode == 0, created.stderr
    lines = dict(line.split("=", 1) for line in created.stdout.split())
    access_key_id, secret = lines["AWS_ACCESS_KEY_ID"], lines["AWS_SECRET_ACCESS_KEY"]
    creds = S3Credentials(store.meta, load_or_create(settings.var_dir))  # the CLI made the server secret here
    assert creds.lookup(access_key_id) == (secret, "acme")
    listed = minis3("list")
    assert listed.returncode == 0 and secret not in listed.stdout and api.stdout.strip() not in listed.stdout
    kinds = {(k.get("kind"), k["id"]) for k in json.loads(listed.stdout)}
    assert ("s3", access_key_id) in kinds and len(kinds) == 2
    revoked = minis3("revoke", access_key_id)
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["active"] is False
    assert creds.lookup(access_key_id) is None
    assert minis3("revoke", "AKMS0000000000000000").returncode == 1
