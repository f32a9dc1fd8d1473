"""``Expect: 100-continue`` on the S3 port (real gunicorn, raw sockets): a request the server
refuses is answered with its final status before the body, never with ``100 Continue``, and its
connection closes; an accepted one gets ``100 Continue``, then its body is read and stored."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import types
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError
from gunicorn.http import message, wsgi

from config import slowclients
from tests.s3clients import boto3_client, presign, sign
from tests.stack import ROOT, MiB, Stack, random_bytes

BODY = random_bytes(256 * 1024, 41)
KEY_LIMIT = 4  # verified requests per key per minute on this module's stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory, backends):
    """The S3 front end alone, with a small per-key limit that a test can reach."""
    s = Stack(tmp_path_factory.mktemp("expect"), backends, web=False, worker=False, s3=True,
              s3_rate_limit=f"{KEY_LIMIT} per minute", s3_failed_rate_limit="100 per minute")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def owner(stack):
    keys = stack.s3_credentials("acme")
    boto3_client(stack, keys).create_bucket(Bucket="waiting")
    return keys


@pytest.fixture
def keys(stack, owner):
    """A fresh key of the bucket's owner: its own budget of verified requests."""
    return stack.s3_credentials("acme")


class Exchange:
    """One HTTP/1.1 request over a raw socket whose headers promise a body and ask ``Expect:
    100-continue``; the body is sent only when the test says so."""

    def __init__(self, url: str, headers: dict[str, str], method: str = "PUT", length: int = len(BODY)):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {length}",
                 "Expect: 100-continue", *(f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "expect"))]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.received = b""

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.received:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"connection closed before {marker!r}; got {self.received[:300]!r}")
            self.received += data
        head, _, self.received = self.received.partition(marker)
        return head + marker

    def response(self) -> tuple[str, dict[str, str], bytes]:
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        status, *lines = head.strip().split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.received) < length:
            data = self.sock.recv(65536)
            assert data, "connection closed inside the answer's body"
            self.received += data
        body, self.received = self.received[:length], self.received[length:]
        return status, headers, body

    def closed_by_server(self) -> bool:
        """The server ends the connection after its answer (read with the socket's timeout)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return False  # a reset would cost a client the answer; never expected here

    def close(self):
        self.sock.close()


def refused_before_body(url: str, headers: dict[str, str]) -> tuple[str, bytes]:
    """The first answer to headers that wait for 100 Continue, asserting it is final, says so,
    and closes the connection without the body ever being sent."""
    ex = Exchange(url, headers)
    try:
        status, answer_headers, body = ex.response()
        assert not status.startswith("HTTP/1.1 1"), status
        assert answer_headers.get("connection", "").lower() == "close"
        assert answer_headers.get("x-amz-request-id")
        assert ex.closed_by_server()
        return status, body
    finally:
        ex.close()


def signed_headers(url: str, keys, body: bytes = BODY) -> dict[str, str]:
    return sign("PUT", url, keys, body=body, headers={"expect": "100-continue"}).headers


def code_of(body: bytes) -> str:
    text = body.decode()
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0]


def test_a_valid_upload_gets_100_continue_then_its_body_is_stored(stack, keys):
    url = f"{stack.s3_url}/waiting/accepted"
    ex = Exchange(url, signed_headers(url, keys))
    try:
        first = ex.read_until(b"\r\n\r\n")
        assert first == b"HTTP/1.1 100 Continue\r\n\r\n", first + ex.received  # nothing sent yet
        ex.sock.sendall(BODY)
        status, headers, _ = ex.response()
        assert status.startswith("HTTP/1.1 200"), status
        assert headers.get("connection", "keep-alive").lower() != "close"
    finally:
        ex.close()
    got = boto3_client(stack, keys).get_object(Bucket="waiting", Key="accepted")["Body"].read()
    assert got == BODY


def test_a_bad_signature_is_refused_before_the_body(stack, keys):
    url = f"{stack.s3_url}/waiting/bad-signature"
    status, body = refused_before_body(url, signed_headers(url, (keys[0], keys[1] + "x")))
    assert status.startswith("HTTP/1.1 403") and code_of(body) == "SignatureDoesNotMatch"


def test_an_unknown_access_key_is_refused_before_the_body(stack):
    url = f"{stack.s3_url}/waiting/unknown-key"
    status, body = refused_before_body(url, signed_headers(url, ("AKMS0000000000000000", "secret")))
    assert status.startswith("HTTP/1.1 403") and code_of(body) == "InvalidAccessKeyId"


def test_an_expired_presigned_put_is_refused_before_the_body(stack, keys):
    two_hours_ago = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 7200))
    url = presign("PUT", f"{stack.s3_url}/waiting/expired", keys, 3600, amz_date=two_hours_ago)
    status, body = refused_before_body(url, {})
    assert status.startswith("HTTP/1.1 403") and code_of(body) == "AccessDenied"
    assert b"Request has expired" in body and b"<X-Amz-Expires>3600</X-Amz-Expires>" in body


def test_an_unknown_bucket_is_refused_before_the_body(stack, keys):
    url = f"{stack.s3_url}/no-such-bucket/key"
    status, body = refused_before_body(url, signed_headers(url, keys))
    assert status.startswith("HTTP/1.1 404") and code_of(body) == "NoSuchBucket"


def test_another_tenants_bucket_is_refused_before_the_body_for_put_and_upload_part(stack, owner):
    other = stack.s3_credentials("globex")
    for url in (f"{stack.s3_url}/waiting/theirs",
                f"{stack.s3_url}/waiting/theirs?partNumber=1&uploadId=0123456789abcdef"):
        status, body = refused_before_body(url, signed_headers(url, other))
        assert status.startswith("HTTP/1.1 403") and code_of(body) == "AccessDenied", url


def test_an_unsigned_upload_is_refused_before_the_body(stack, owner):
    status, body = refused_before_body(f"{stack.s3_url}/waiting/anonymous", {})
    assert status.startswith("HTTP/1.1 403") and code_of(body) == "AccessDenied"
    status, body = refused_before_body(f"{stack.s3_url}/nowhere/anonymous", {})
    assert status.startswith("HTTP/1.1 404") and code_of(body) == "NoSuchBucket"


def test_a_rate_limited_upload_is_refused_before_the_body(stack, keys):
    client = boto3_client(stack, keys, retries={"max_attempts": 1})
    for _ in range(KEY_LIMIT):
        client.head_bucket(Bucket="waiting")
    url = f"{stack.s3_url}/waiting/limited"
    status, body = refused_before_body(url, signed_headers(url, keys))
    assert status.startswith("HTTP/1.1 503") and code_of(body) == "SlowDown"


def test_boto3_uploads_which_wait_for_100_continue_round_trip(stack, keys):
    client = boto3_client(stack, keys)
    data = random_bytes(6 * MiB, 42)
    client.put_object(Bucket="waiting", Key="boto3-put", Body=io.BytesIO(BODY))  # a file: Expect is sent
    upload = client.create_multipart_upload(Bucket="waiting", Key="boto3-mpu")["UploadId"]
    more = boto3_client(stack, stack.s3_credentials("acme"))
    parts = [{"PartNumber": 1, "ETag": more.upload_part(Bucket="waiting", Key="boto3-mpu", UploadId=upload,
                                                          PartNumber=1, Body=io.BytesIO(data))["ETag"]}]
    more.complete_multipart_upload(Bucket="waiting", Key="boto3-mpu", UploadId=upload,
                                   MultipartUpload={"Parts": parts})
    reader = boto3_client(stack, stack.s3_credentials("acme"))
    assert reader.get_object(Bucket="waiting", Key="boto3-put")["Body"].read() == BODY
    assert reader.get_object(Bucket="waiting", Key="boto3-mpu")["Body"].read() == data
    with pytest.raises(ClientError) as info:  # a refusal boto3 reads before sending the body
        boto3_client(stack, stack.s3_credentials("globex")).put_object(Bucket="waiting", Key="x",
                                                                       Body=io.BytesIO(data))
    assert info.value.response["Error"]["Code"] == "AccessDenied"


# --- other Expect values, and uploads without a length -----------------------------------------------

def raw_exchange(url: str, headers: dict[str, str], body: bytes = b"", method: str = "PUT") -> tuple[str, bytes]:
    """(status line, body) of one request sent exactly with these headers (nothing added)."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close"]
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    head, _, rest = answer.partition(b"\r\n\r\n")
    return head.decode("latin-1").split("\r\n", 1)[0], rest


@pytest.mark.parametrize("expect", ["200", ""])
def test_an_expect_other_than_100_continue_is_ignored_as_s3_does(stack, keys, expect):
    url = f"{stack.s3_url}/waiting/expect-{expect or 'empty'}"
    headers = sign("PUT", url, keys, body=b"kept", headers={"expect": expect}).headers
    status, body = raw_exchange(url, {**headers, "Content-Length": "4"}, b"kept")  # gunicorn alone: 417
    assert status.startswith("HTTP/1.1 200"), (status, body)
    assert boto3_client(stack, keys).get_object(Bucket="waiting", Key=f"expect-{expect or 'empty'}")[
        "Body"].read() == b"kept"


def test_an_upload_without_content_length_or_chunked_body_is_411_missing_content_length(stack, keys):
    url = f"{stack.s3_url}/waiting/no-length"
    status, body = raw_exchange(url, sign("PUT", url, keys).headers)
    assert status.startswith("HTTP/1.1 411") and code_of(body) == "MissingContentLength", (status, body)
    client = boto3_client(stack, keys)
    upload = client.create_multipart_upload(Bucket="waiting", Key="no-length")["UploadId"]
    url = f"{stack.s3_url}/waiting/no-length?partNumber=1&uploadId={upload}"
    status, body = raw_exchange(url, sign("PUT", url, keys).headers)
    assert status.startswith("HTTP/1.1 411") and code_of(body) == "MissingContentLength", (status, body)


# --- the gunicorn internal replaced ------------------------------------------------------------

def test_the_installed_gunicorn_has_what_deferring_100_continue_replaces():
    assert slowclients.continue_incompatibilities(wsgi, message) == []
    assert slowclients.expectation_incompatibilities(message) == []


def test_a_gunicorn_whose_header_policy_changed_is_refused():
    class Request:
        def _apply_header_policy(self, name, value):
            ...

    assert slowclients.expectation_incompatibilities(types.SimpleNamespace(Request=Request)) == [
        "gunicorn.http.message.Request._apply_header_policy takes (self, name, value), expected "
        "(self, name, value, scheme_state, seen, secure_scheme_headers, forwarder_headers, from_trailer)",
        "gunicorn.http.message.Request._policy_expect_continue is missing",
    ]


def test_a_gunicorn_whose_create_changed_is_refused_with_every_difference():
    def create(req, sock, client, server):  # lost cfg and the response class
        ...

    fake_wsgi = types.SimpleNamespace(create=create, Response=object)
    fake_message = types.SimpleNamespace(Request=object)
    assert slowclients.continue_incompatibilities(fake_wsgi, fake_message) == [
        "gunicorn.http.wsgi.create takes (req, sock, client, server), expected "
        "(req, sock, client, server, cfg, response_class, response_args)",
        "gunicorn.http.message.Request._expected_100_continue is missing",
        "gunicorn.http.wsgi.Response.force_close is missing",
    ]


def test_the_s3_configuration_refuses_to_load_on_a_gunicorn_lacking_it():
    done = subprocess.run([sys.executable, "-c", "import gunicorn.http.wsgi as w; del w.create; "
                           "import app.gunicorn_s3_conf"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "gunicorn.http.wsgi.create is missing" in done.stderr and slowclients.TESTED in done.stderr
