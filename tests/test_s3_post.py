"""Browser POST uploads (``POST /bucket``, multipart/form-data, a signed policy) with boto3's
``generate_presigned_post`` and requests, against gunicorn + celery worker."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from botocore.exceptions import ClientError

from tests.s3clients import REGION, boto3_client
from tests.stack import MiB, random_bytes


@pytest.fixture(scope="module")
def s3(s3_stack, s3_keys):
    client = boto3_client(s3_stack, s3_keys)
    client.create_bucket(Bucket="forms")
    return client


@pytest.fixture(scope="module")
def s3v4(s3_stack, s3_keys, s3):
    return boto3_client(s3_stack, s3_keys, signature_version="s3v4")


def xml_code(response) -> str:
    text = response.text
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else ""


def xml_text(response, element: str) -> str:
    return response.text.split(f"<{element}>", 1)[1].split(f"</{element}>", 1)[0]


def submit(presigned: dict, data: bytes, filename: str = "upload.bin", extra: dict | None = None):
    fields = {**presigned["fields"], **(extra or {})}
    return requests.post(presigned["url"], data=fields, files={"file": (filename, data)}, timeout=60)


def absent(s3, key: str) -> bool:
    try:
        s3.head_object(Bucket="forms", Key=key)
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    return False


def v4_form(s3_stack, keys, key: str, policy: dict | str | None = None) -> dict:
    """A form signed as SigV4 does it: ``policy`` as given (raw JSON, bad documents), or by default
    one that names the bucket, the key and the signing fields."""
    access_key, secret = keys
    date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    fields = {"key": key, "x-amz-algorithm": "AWS4-HMAC-SHA256",
              "x-amz-credential": f"{access_key}/{date[:8]}/{REGION}/s3/aws4_request", "x-amz-date": date}
    if policy is None:
        expiration = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        policy = {"expiration": expiration, "conditions": [{"bucket": "forms"}, *({n: v} for n, v in fields.items())]}
    text = policy if isinstance(policy, str) else json.dumps(policy)
    encoded = base64.b64encode(text.encode()).decode()
    signing = ("AWS4" + secret).encode()
    for part in (date[:8], REGION, "s3", "aws4_request"):
        signing = hmac.new(signing, part.encode(), hashlib.sha256).digest()
    fields["policy"] = encoded
    fields["x-amz-signature"] = hmac.new(signing, encoded.encode(), hashlib.sha256).hexdigest()
    return {"url": f"{s3_stack.s3_url}/forms", "fields": fields}


# --- success ---------------------------------------------------------------------------------------

def test_a_default_boto3_form_sigv2_uploads_the_file(s3):
    presigned = s3.generate_presigned_post("forms", "plain.bin")
    assert "AWSAccessKeyId" in presigned["fields"]  # boto3's default form in us-east-1
    data = random_bytes(1000, seed=1)
    r = submit(presigned, data)
    assert r.status_code == 204, r.text
    assert r.headers["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket="forms", Key="plain.bin")
    assert got["Body"].read() == data and got["ETag"] == r.headers["ETag"]


def test_a_sigv4_form_with_filename_and_status_201_answers_a_post_response(s3_stack, s3, s3v4):
    presigned = s3v4.generate_presigned_post("forms", "users/42/${filename}",
                                             Fields={"success_action_status": "201"},
                                             Conditions=[{"success_action_status": "201"}])
    assert "x-amz-signature" in presigned["fields"]
    data = random_bytes(3 * MiB + 5, seed=2)  # several chunks, streamed
    r = submit(presigned, data, filename="holiday photo.jpg")
    assert r.status_code == 201, r.text
    etag = f'"{hashlib.md5(data).hexdigest()}"'
    assert xml_text(r, "Bucket") == "forms" and xml_text(r, "Key") == "users/42/holiday photo.jpg"
    assert xml_text(r, "ETag") == etag.replace('"', "&quot;")
    assert xml_text(r, "Location") == f"{s3_stack.s3_url}/forms/users/42/holiday%20photo.jpg"
    assert s3.get_object(Bucket="forms", Key="users/42/holiday photo.jpg")["Body"].read() == data


def test_exact_eq_and_starts_with_conditions_and_stored_attributes(s3_stack, s3):
    fields = {"Content-Type": "image/png", "x-amz-meta-owner": "ann", "Cache-Control": "max-age=60",
              "acl": "public-read", "success_action_status": "200", "x-ignore-tracking": "anything"}
    presigned = s3.generate_presigned_post(
        "forms", "photos/cat.png", Fields=fields,
        Conditions=[{"Content-Type": "image/png"}, ["eq", "$x-amz-meta-owner", "ann"],
                    ["starts-with", "$Cache-Control", "max-age="], ["starts-with", "$key", "photos/"],
                    {"acl": "public-read"}, ["eq", "$success_action_status", "200"],
                    ["content-length-range", 1, 100]])
    r = submit(presigned, b"\x89PNG...")
    assert r.status_code == 200 and r.content == b"", r.text
    head = s3.head_object(Bucket="forms", Key="photos/cat.png")
    assert head["ContentType"] == "image/png" and head["Metadata"] == {"owner": "ann"}
    assert head["CacheControl"] == "max-age=60"
    with s3_stack.metadata() as meta:
        doc = meta.namespace.get_object_name("forms/photos/cat.png")
    assert doc["contentType"] == "image/png" and doc["meta"] == {"owner": "ann"} and doc["size"] == 7


def test_success_action_redirect_answers_303_to_the_url_with_bucket_key_and_etag(s3):
    target = "https://app.example/done?step=2"
    presigned = s3.generate_presigned_post("forms", "redirected.txt", Fields={"success_action_redirect": target},
                                           Conditions=[{"success_action_redirect": target}])
    r = requests.post(presigned["url"], data=presigned["fields"], files={"file": ("a.txt", b"moved")},
                      allow_redirects=False, timeout=60)
    assert r.status_code == 303, r.text
    location = urlsplit(r.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "app.example", "/done")
    assert parse_qs(location.query) == {"step": ["2"], "bucket": ["forms"], "key": ["redirected.txt"],
                                        "etag": [f'"{hashlib.md5(b"moved").hexdigest()}"']}
    assert s3.get_object(Bucket="forms", Key="redirected.txt")["Body"].read() == b"moved"


def test_a_field_after_the_file_is_ignored(s3_stack, s3_keys, s3):
    form = v4_form(s3_stack, s3_keys, "late.txt")
    boundary = "xYzZY"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n'.encode()
             for n, v in form["fields"].items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.txt"\r\n'
                 f"Content-Type: text/plain\r\n\r\n".encode() + b"file bytes\r\n")
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="x-amz-meta-late"\r\n\r\nx\r\n'
                 f"--{boundary}--\r\n".encode())
    r = requests.post(form["url"], data=b"".join(parts), timeout=60,
                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 204, r.text
    head = s3.head_object(Bucket="forms", Key="late.txt")
    assert head["Metadata"] == {}  # not covered by the policy, yet no "extra field": it came after the file


# --- refusals --------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,message", [
    ({"Content-Type": "text/html"}, 'Policy Condition failed: {"Content-Type": "image/png"}'),
    ({"x-amz-meta-owner": "bob"}, 'Policy Condition failed: ["eq", "$x-amz-meta-owner", "ann"]'),
])
def test_a_failed_condition_is_403_and_stores_nothing(s3, extra, message):
    presigned = s3.generate_presigned_post(
        "forms", "guarded.txt", Fields={"Content-Type": "image/png", "x-amz-meta-owner": "ann"},
        Conditions=[{"Content-Type": "image/png"}, ["eq", "$x-amz-meta-owner", "ann"]])
    r = submit(presigned, b"data", extra=extra)
    assert (r.status_code, xml_code(r)) == (403, "AccessDenied")
    assert f"Invalid according to Policy: {message}" in r.text.replace("&quot;", '"')
    assert absent(s3, "guarded.txt")


def test_a_key_outside_the_starts_with_prefix_is_refused(s3):
    presigned = s3.generate_presigned_post("forms", "inbox/${filename}")  # boto3 adds starts-with inbox/
    r = submit(presigned, b"data", extra={"key": "elsewhere/x.txt"})
    assert (r.status_code, xml_code(r)) == (403, "AccessDenied")
    assert 'Policy Condition failed: ["starts-with", "$key", "inbox/"]' in r.text.replace("&quot;", '"')
    assert absent(s3, "elsewhere/x.txt")


def test_a_field_no_condition_names_is_an_extra_input_field(s3):
    presigned = s3.generate_presigned_post("forms", "extra.txt")
    r = submit(presigned, b"data", extra={"x-amz-meta-sneaky": "1", "Content-Type": "text/html"})
    assert (r.status_code, xml_code(r)) == (403, "AccessDenied")
    assert "Invalid according to Policy: Extra input fields: content-type, x-amz-meta-sneaky" in r.text
    assert absent(s3, "extra.txt")


def test_an_expired_policy_is_refused(s3):
    presigned = s3.generate_presigned_post("forms", "late.bin", ExpiresIn=-5)
    r = submit(presigned, b"data")
    assert (r.status_code, xml_code(r)) == (403, "AccessDenied")
    assert "Invalid according to Policy: Policy expired." in r.text
    assert absent(s3, "late.bin")


@pytest.mark.parametrize("size,code", [(0, "EntityTooSmall"), (2 * MiB + 1, "EntityTooLarge")])
def test_a_file_outside_the_content_length_range_is_refused(s3, size, code):
    key = f"ranged-{size}.bin"
    presigned = s3.generate_presigned_post("forms", key, Conditions=[["content-length-range", 1, 2 * MiB]])
    r = submit(presigned, random_bytes(size, seed=size))
    assert (r.status_code, xml_code(r)) == (400, code)
    assert absent(s3, key)
    edge = random_bytes(2 * MiB if size else 1, seed=3)
    assert submit(presigned, edge).status_code == 204  # the bounds are inclusive
    assert s3.get_object(Bucket="forms", Key=key)["Body"].read() == edge


def test_a_wrong_signature_or_unknown_key_or_no_signature_is_refused(s3, s3v4):
    for client in (s3, s3v4):
        presigned = client.generate_presigned_post("forms", "forged.txt")
        name = "signature" if "signature" in presigned["fields"] else "x-amz-signature"
        value = presigned["fields"][name]
        forged = value[:-2] + ("AA" if value[-2:] != "AA" else "BB")
        r = submit(presigned, b"data", extra={name: forged})
        assert (r.status_code, xml_code(r)) == (403, "SignatureDoesNotMatch"), name
    presigned = s3.generate_presigned_post("forms", "forged.txt")
    r = submit(presigned, b"data", extra={"AWSAccessKeyId": "AKMSNOTAKEY000000000"})
    assert (r.status_code, xml_code(r)) == (403, "InvalidAccessKeyId")
    r = requests.post(presigned["url"], data={"key": "forged.txt"}, files={"file": ("f", b"data")}, timeout=60)
    assert (r.status_code, xml_code(r)) == (403, "AccessDenied")
    assert absent(s3, "forged.txt")


def test_another_tenants_bucket_is_refused(s3_stack, s3):
    globex = boto3_client(s3_stack, s3_stack.s3_credentials("globex"))
    presigned = globex.generate_presigned_post("forms", "intruder.txt")
    r = submit(presigned, b"data")
    assert (r.status_code, xml_code(r)) == (403, "AccessDenied")
    assert absent(s3, "intruder.txt")


def test_a_policy_without_its_signature_is_invalid_argument_400(s3_stack, s3_keys, s3, s3v4):
    v2 = s3.generate_presigned_post("forms", "unsigned.txt")
    fields = {k: v for k, v in v2["fields"].items() if k != "signature"}
    r = requests.post(v2["url"], data=fields, files={"file": ("f", b"data")}, timeout=60)
    assert (r.status_code, xml_code(r)) == (400, "InvalidArgument")
    assert "must contain a field named 'signature'" in r.text
    v4 = v4_form(s3_stack, s3_keys, "unsigned.txt")
    fields = {k: v for k, v in v4["fields"].items() if k != "x-amz-signature"}
    r = requests.post(v4["url"], data=fields, files={"file": ("f", b"data")}, timeout=60)
    assert (r.status_code, xml_code(r)) == (400, "InvalidArgument")
    assert "must contain a field named 'x-amz-signature'" in r.text
    assert absent(s3, "unsigned.txt")


def test_an_anonymous_form_writes_where_the_bucket_acl_lets_anyone_write(s3_stack, s3):
    s3.create_bucket(Bucket="open-forms", ACL="public-read-write")
    tagging = ("<Tagging><TagSet><Tag><Key>team</Key><Value>blue</Value></Tag>"
               "<Tag><Key>stage</Key><Value>draft</Value></Tag></TagSet></Tagging>")
    fields = {"key": "drop/${filename}", "acl": "public-read", "Content-Type": "text/plain", "tagging": tagging,
              "success_action_status": "201"}  # no policy, no signature: no condition applies
    r = requests.post(f"{s3_stack.s3_url}/open-forms", data=fields, files={"file": ("note.txt", b"hello")},
                      timeout=60)
    assert r.status_code == 201, r.text
    assert "<PostResponse><Location>" in r.text  # S3 writes this document without a namespace
    assert xml_text(r, "Key") == "drop/note.txt" and xml_text(r, "Bucket") == "open-forms"
    got = s3.get_object(Bucket="open-forms", Key="drop/note.txt")
    assert got["Body"].read() == b"hello" and got["ContentType"] == "text/plain"
    tags = s3.get_object_tagging(Bucket="open-forms", Key="drop/note.txt")["TagSet"]
    assert tags == [{"Key": "stage", "Value": "draft"}, {"Key": "team", "Value": "blue"}]  # listed by key
    grants = s3.get_object_acl(Bucket="open-forms", Key="drop/note.txt")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("/AllUsers") and g["Permission"] == "READ" for g in grants)
    # an unknown success_action_status is 204, as S3 answers it
    r = requests.post(f"{s3_stack.s3_url}/open-forms", data={"key": "other.txt", "success_action_status": "404"},
                      files={"file": ("f", b"x")}, timeout=60)
    assert r.status_code == 204, r.text
    # a bucket that does not let anyone write refuses the same anonymous form
    r = requests.post(f"{s3_stack.s3_url}/forms", data=fields, files={"file": ("note.txt", b"hello")}, timeout=60)
    assert (r.status_code, xml_code(r)) == (403, "AccessDenied")
    assert absent(s3, "drop/note.txt")


def test_a_checksum_field_is_verified_against_the_file_and_kept(s3):
    data = random_bytes(2 * MiB + 3, seed=7)  # several pieces
    good = base64.b64encode(hashlib.sha256(data).digest()).decode()
    presigned = s3.generate_presigned_post("forms", "summed.bin")  # the checksum field needs no condition
    r = submit(presigned, data, extra={"x-amz-checksum-sha256": good})
    assert r.status_code == 204, r.text
    head = s3.head_object(Bucket="forms", Key="summed.bin", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == good
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    presigned = s3.generate_presigned_post("forms", "badsum.bin")
    r = submit(presigned, data, extra={"x-amz-checksum-sha256": wrong})
    assert (r.status_code, xml_code(r)) == (400, "BadDigest")
    r = submit(presigned, data, extra={"x-amz-checksum-sha256": "sailorjerry"})
    assert (r.status_code, xml_code(r)) == (400, "InvalidRequest")
    assert absent(s3, "badsum.bin")


@pytest.mark.parametrize("policy,message", [
    ("not json", "Invalid Policy: Invalid JSON."),
    ({"conditions": []}, "Invalid Policy: Missing expiration."),
    ({"expiration": "tomorrow", "conditions": []}, "Invalid Policy: Invalid expiration."),
    ({"expiration": "2099-01-01T00:00:00Z"}, "Invalid Policy: Missing conditions."),
    ({"expiration": "2099-01-01T00:00:00Z", "conditions": [["matches", "$key", "x"]]}, "Invalid Condition"),
    ({"expiration": "2099-01-01T00:00:00Z", "conditions": [["content-length-range", 5, 1]]},
     "Invalid content-length-range"),
])
def test_a_malformed_policy_is_invalid_policy_document(s3_stack, s3_keys, s3, policy, message):
    r = submit(v4_form(s3_stack, s3_keys, "bad-policy.txt", policy), b"data")
    assert (r.status_code, xml_code(r)) == (400, "InvalidPolicyDocument")
    assert message in r.text


def test_a_form_without_key_or_file_or_multipart_is_refused(s3_stack, s3):
    presigned = s3.generate_presigned_post("forms", "nokey.txt")
    fields = {k: v for k, v in presigned["fields"].items() if k != "key"}
    r = requests.post(presigned["url"], data=fields, files={"file": ("f", b"data")}, timeout=60)
    assert (r.status_code, xml_code(r)) == (400, "InvalidArgument")
    assert "must contain a field named 'key'" in r.text
    r = requests.post(presigned["url"], files={name: (None, value) for name, value in presigned["fields"].items()},
                      timeout=60)
    assert (r.status_code, xml_code(r)) == (400, "InvalidArgument")
    assert "exactly one file" in r.text
    r = requests.post(presigned["url"], data=presigned["fields"], timeout=60)  # urlencoded, not a form upload
    assert (r.status_code, xml_code(r)) == (412, "PreconditionFailed")
    assert absent(s3, "nokey.txt")
