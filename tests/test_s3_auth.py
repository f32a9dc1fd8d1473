"""S3 authentication refuses what it must, with AWS's codes, and stores nothing of a refused request."""
from __future__ import annotations

import time

import pytest
import requests
from botocore.exceptions import ClientError

from app.auth import keys_command
from tests.s3clients import aws_chunked, boto3_client, encode_chunks, presign, sign
from tests.stack import MiB, random_bytes

STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"


@pytest.fixture(scope="module")
def meta(s3_stack):
    with s3_stack.metadata() as r:
        yield r


@pytest.fixture(scope="module")
def s3(s3_stack, s3_keys):
    client = boto3_client(s3_stack, s3_keys)
    client.create_bucket(Bucket="guarded")
    client.put_object(Bucket="guarded", Key="mine", Body=b"acme's")
    return client


@pytest.fixture
def nothing_stored(s3_stack, s3, meta):
    """Asserts after the test that no file, name or spool directory was added."""
    files, names = meta.db.files.count_documents({}), meta.db.objects.count_documents({})
    spooled = set(s3_stack.settings.spool_dir.iterdir())  # uploads of other tests may still be ingesting
    yield
    assert meta.db.files.count_documents({}) == files
    assert meta.db.objects.count_documents({}) == names
    assert set(s3_stack.settings.spool_dir.iterdir()) <= spooled


def code_of(response: requests.Response) -> tuple[str, int]:
    text = response.text
    code = text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else ""
    return code, response.status_code


def test_hand_signed_plain_request_is_accepted(s3_stack, s3_keys, s3):
    """The positive control of this module's signer: the same requests, untampered, are stored."""
    url = f"{s3_stack.s3_url}/guarded/control-plain"
    signed = sign("PUT", url, s3_keys, body=b"plain body")
    assert requests.put(url, data=b"plain body", headers=signed.headers, timeout=30).status_code == 200
    assert s3.get_object(Bucket="guarded", Key="control-plain")["Body"].read() == b"plain body"


def _chunked_put(s3_stack, keys, key: str, pieces: list[bytes], tamper) -> requests.Response:
    url = f"{s3_stack.s3_url}/guarded/{key}"
    decoded = sum(map(len, pieces))
    length = sum(len(f"{len(p):x};chunk-signature=".encode()) + 64 + 4 + len(p) for p in [*pieces, b""])
    signed = sign("PUT", url, keys, payload_hash=STREAMING,
                  headers={"content-encoding": "aws-chunked", "content-length": str(length),
                           "x-amz-decoded-content-length": str(decoded)})
    body = encode_chunks(tamper(aws_chunked(signed, pieces)))
    assert len(body) == length
    return requests.put(url, data=body, headers=signed.headers, timeout=60)


def test_aws_chunked_upload_with_good_signatures_is_stored(s3_stack, s3_keys, s3):
    pieces = [random_bytes(MiB, 3), random_bytes(10, 4)]
    r = _chunked_put(s3_stack, s3_keys, "chunked-ok", pieces, lambda chunks: chunks)
    assert r.status_code == 200, r.text
    assert s3.get_object(Bucket="guarded", Key="chunked-ok")["Body"].read() == b"".join(pieces)


def test_tampered_chunk_signature_is_refused(s3_stack, s3_keys, s3, nothing_stored):
    def tamper(chunks):
        piece, sig = chunks[1]
        chunks[1] = (piece, ("0" if sig[0] != "0" else "1") + sig[1:])
        return chunks

    r = _chunked_put(s3_stack, s3_keys, "chunked-bad", [random_bytes(MiB, 5), random_bytes(10, 6)], tamper)
    assert code_of(r) == ("SignatureDoesNotMatch", 403)


def test_tampered_chunk_data_is_refused(s3_stack, s3_keys, s3, nothing_stored):
    def tamper(chunks):
        piece, sig = chunks[0]
        chunks[0] = (b"X" + piece[1:], sig)
        return chunks

    r = _chunked_put(s3_stack, s3_keys, "chunked-data", [random_bytes(1000, 7)], tamper)
    assert code_of(r) == ("SignatureDoesNotMatch", 403)


def test_tampered_final_empty_chunk_signature_is_refused(s3_stack, s3_keys, s3, nothing_stored):
    def tamper(chunks):
        piece, sig = chunks[-1]
        chunks[-1] = (piece, sig[::-1])
        return chunks

    r = _chunked_put(s3_stack, s3_keys, "chunked-final", [random_bytes(1000, 8)], tamper)
    assert code_of(r) == ("SignatureDoesNotMatch", 403)


def test_wrong_secret_is_refused(s3_stack, s3_keys, s3, nothing_stored):
    wrong = boto3_client(s3_stack, (s3_keys[0], s3_keys[1] + "x"))
    with pytest.raises(ClientError) as info:
        wrong.put_object(Bucket="guarded", Key="wrong-secret", Body=b"x")
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_unknown_access_key_and_unsigned_requests_are_refused(s3_stack, s3, nothing_stored):
    with pytest.raises(ClientError) as info:
        boto3_client(s3_stack, ("AKMS0000000000000000", "secret")).put_object(Bucket="guarded", Key="u", Body=b"x")
    assert info.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    r = requests.put(f"{s3_stack.s3_url}/guarded/unsigned", data=b"x", timeout=30)
    assert code_of(r) == ("AccessDenied", 403)


def test_an_empty_or_absent_authorization_is_anonymous_and_refused(s3_stack, s3, nothing_stored):
    # what s3-tests' test_headers means by a bad Authorization (boto3 re-signs, so it sends none)
    for headers in ({"Authorization": ""}, {}):
        r = requests.put(f"{s3_stack.s3_url}/guarded/no-auth", data=b"x", headers=headers, timeout=30)
        assert code_of(r) == ("AccessDenied", 403)
        r = requests.put(f"{s3_stack.s3_url}/no-auth-bucket", headers=headers, timeout=30)
        assert code_of(r) == ("AccessDenied", 403)


def test_tampered_body_is_refused(s3_stack, s3_keys, s3, nothing_stored):
    url = f"{s3_stack.s3_url}/guarded/tampered"
    signed = sign("PUT", url, s3_keys, body=b"the signed body")
    r = requests.put(url, data=b"the other body", headers=signed.headers, timeout=30)
    assert code_of(r) == ("XAmzContentSHA256Mismatch", 400)


def test_skewed_clock_is_refused(s3_stack, s3_keys, s3, nothing_stored):
    url = f"{s3_stack.s3_url}/guarded/skewed"
    past = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 20 * 60))
    signed = sign("PUT", url, s3_keys, body=b"late", amz_date=past)
    r = requests.put(url, data=b"late", headers=signed.headers, timeout=30)
    assert code_of(r) == ("RequestTimeTooSkewed", 403)


def test_expired_presigned_url_is_refused(s3_stack, s3_keys, s3, nothing_stored):
    url = f"{s3_stack.s3_url}/guarded/expired"
    two_hours_ago = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 7200))
    r = requests.put(presign("PUT", url, s3_keys, 3600, amz_date=two_hours_ago), data=b"too late", timeout=30)
    assert code_of(r) == ("AccessDenied", 403) and "expired" in r.text
    fresh = requests.get(presign("GET", f"{s3_stack.s3_url}/guarded/mine", s3_keys, 60), timeout=30)
    assert fresh.status_code == 200 and fresh.content == b"acme's"  # the same signer, in time


def test_revoked_key_is_refused(s3_stack, s3, nothing_stored, meta):
    keys = s3_stack.s3_credentials("acme")
    client = boto3_client(s3_stack, keys)
    assert client.head_bucket(Bucket="guarded")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert keys_command(s3_stack.settings, "revoke", key_id=keys[0]) == 0  # `minis3 keys revoke`
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket="guarded", Key="revoked", Body=b"x")
    assert info.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def test_other_tenants_bucket_is_refused(s3_stack, s3, nothing_stored):
    other = boto3_client(s3_stack, s3_stack.s3_credentials("globex"))
    for call in (lambda: other.put_object(Bucket="guarded", Key="theirs", Body=b"x"),
                 lambda: other.get_object(Bucket="guarded", Key="mine"),
                 lambda: other.list_objects_v2(Bucket="guarded"),
                 lambda: other.delete_object(Bucket="guarded", Key="mine"),
                 lambda: other.copy_object(Bucket="guarded", Key="stolen", CopySource="guarded/mine")):
        with pytest.raises(ClientError) as info:
            call()
        assert info.value.response["Error"]["Code"] == "AccessDenied"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert s3.get_object(Bucket="guarded", Key="mine")["Body"].read() == b"acme's"
