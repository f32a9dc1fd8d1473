"""Bucket CORS (configuration, preflight, actual requests) and bucket tagging, with boto3 and raw
HTTP against gunicorn + celery worker; the configuration's MongoDB document too."""
from __future__ import annotations

import base64
import hashlib

import pytest
import requests
from botocore.exceptions import ClientError

from tests.s3clients import boto3_client, sign

RULES = [
    {"ID": "uploads", "AllowedOrigins": ["http://app.example", "https://*.example.org"],
     "AllowedMethods": ["PUT", "POST"], "AllowedHeaders": ["content-type", "x-amz-*"],
     "ExposeHeaders": ["ETag", "x-amz-request-id"], "MaxAgeSeconds": 600},
    {"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "HEAD"]},
]


@pytest.fixture(scope="module")
def s3(s3_stack, s3_keys):
    client = boto3_client(s3_stack, s3_keys)
    client.create_bucket(Bucket="web")
    client.put_object(Bucket="web", Key="page.txt", Body=b"hello")
    client.put_bucket_cors(Bucket="web", CORSConfiguration={"CORSRules": RULES})
    return client


@pytest.fixture(scope="module")
def other(s3_stack):
    return boto3_client(s3_stack, s3_stack.s3_credentials("globex"))


def error_code(exc: ClientError) -> tuple[str, int]:
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


def failure(call, *args, **kwargs) -> tuple[str, int]:
    with pytest.raises(ClientError) as info:
        call(*args, **kwargs)
    return error_code(info.value)


def raw(s3_stack, keys, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    url = s3_stack.s3_url + path
    signed = sign(method, url, keys, headers=headers, body=body)
    return requests.request(method, url, data=body, headers=signed.headers, timeout=30)


def xml_code(response) -> str:
    text = response.text
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else ""


def bucket_doc(s3_stack, name: str) -> dict:
    with s3_stack.metadata() as meta:
        return meta.namespace.get_bucket(name)


def preflight(s3_stack, path: str, origin: str | None, method: str | None, headers: str | None = None):
    sent = {}
    if origin is not None:
        sent["Origin"] = origin
    if method is not None:
        sent["Access-Control-Request-Method"] = method
    if headers is not None:
        sent["Access-Control-Request-Headers"] = headers
    return requests.options(s3_stack.s3_url + path, headers=sent, timeout=30)


# --- CORS configuration ------------------------------------------------------------------------

def test_cors_configuration_round_trips_and_is_stored_on_the_bucket(s3_stack, s3):
    got = s3.get_bucket_cors(Bucket="web")["CORSRules"]
    assert got[0] == RULES[0]
    assert got[1] == {"AllowedOrigins": ["*"], "AllowedMethods": ["GET", "HEAD"]}
    stored = bucket_doc(s3_stack, "web")["config"]["cors"]["rules"]
    assert [r["origins"] for r in stored] == [["http://app.example", "https://*.example.org"], ["*"]]
    assert stored[0]["maxAge"] == 600 and stored[0]["id"] == "uploads"


def test_delete_cors_then_get_is_no_such_cors_configuration(s3_stack, s3):
    s3.create_bucket(Bucket="cors-gone")
    s3.put_bucket_cors(Bucket="cors-gone", CORSConfiguration={"CORSRules": RULES[1:]})
    deleted = s3.delete_bucket_cors(Bucket="cors-gone")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert failure(s3.get_bucket_cors, Bucket="cors-gone") == ("NoSuchCORSConfiguration", 404)
    assert "cors" not in bucket_doc(s3_stack, "cors-gone").get("config", {})
    r = preflight(s3_stack, "/cors-gone/k", "http://app.example", "GET")
    assert (r.status_code, xml_code(r)) == (403, "AccessForbidden")


def test_a_recreated_bucket_does_not_inherit_the_old_configuration(s3):
    s3.create_bucket(Bucket="reborn")
    s3.put_bucket_cors(Bucket="reborn", CORSConfiguration={"CORSRules": RULES[1:]})
    s3.put_bucket_tagging(Bucket="reborn", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    s3.delete_bucket(Bucket="reborn")
    s3.create_bucket(Bucket="reborn")
    assert failure(s3.get_bucket_cors, Bucket="reborn") == ("NoSuchCORSConfiguration", 404)
    assert failure(s3.get_bucket_tagging, Bucket="reborn") == ("NoSuchTagSet", 404)


def test_only_the_owner_reads_and_writes_the_configuration(s3, other):
    assert failure(other.get_bucket_cors, Bucket="web") == ("AccessDenied", 403)
    assert failure(other.put_bucket_cors, Bucket="web", CORSConfiguration={"CORSRules": RULES[1:]}) \
        == ("AccessDenied", 403)
    assert failure(other.delete_bucket_cors, Bucket="web") == ("AccessDenied", 403)
    assert failure(other.get_bucket_tagging, Bucket="web") == ("AccessDenied", 403)
    assert failure(other.put_bucket_tagging, Bucket="web", Tagging={"TagSet": []}) == ("AccessDenied", 403)
    assert failure(other.delete_bucket_tagging, Bucket="web") == ("AccessDenied", 403)
    assert s3.get_bucket_cors(Bucket="web")["CORSRules"][0] == RULES[0]  # unchanged
    assert failure(s3.get_bucket_cors, Bucket="no-such-bucket") == ("NoSuchBucket", 404)


@pytest.mark.parametrize("rule,expected", [
    ({"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}, ("InvalidRequest", 400)),
    ({"AllowedOrigins": ["http://*.*.example"], "AllowedMethods": ["GET"]}, ("InvalidRequest", 400)),
    ({"AllowedOrigins": ["*"], "AllowedMethods": ["GET"], "AllowedHeaders": ["x-*-*"]}, ("InvalidRequest", 400)),
    ({"AllowedOrigins": [], "AllowedMethods": ["GET"]}, ("MalformedXML", 400)),
])
def test_invalid_cors_rules_are_refused(s3, rule, expected):
    assert failure(s3.put_bucket_cors, Bucket="web", CORSConfiguration={"CORSRules": [rule]}) == expected
    assert s3.get_bucket_cors(Bucket="web")["CORSRules"][0] == RULES[0]


def test_more_than_100_rules_is_malformed_and_100_are_accepted(s3):
    s3.create_bucket(Bucket="many-rules")
    rule = {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}
    assert failure(s3.put_bucket_cors, Bucket="many-rules",
                   CORSConfiguration={"CORSRules": [rule] * 101}) == ("MalformedXML", 400)
    s3.put_bucket_cors(Bucket="many-rules", CORSConfiguration={"CORSRules": [rule] * 100})
    assert len(s3.get_bucket_cors(Bucket="many-rules")["CORSRules"]) == 100


@pytest.mark.parametrize("body", [b"<not-xml", b"<Tagging/>", b"<CORSConfiguration/>",
                                  b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>"
                                  b"<AllowedMethod>GET</AllowedMethod><MaxAgeSeconds>soon</MaxAgeSeconds>"
                                  b"</CORSRule></CORSConfiguration>",
                                  b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>"
                                  b"<AllowedMethod>GET</AllowedMethod><Colour>red</Colour>"
                                  b"</CORSRule></CORSConfiguration>"])
def test_malformed_cors_xml_is_malformed_xml(s3_stack, s3_keys, s3, body):
    r = raw(s3_stack, s3_keys, "PUT", "/web?cors", body)
    assert (r.status_code, xml_code(r)) == (400, "MalformedXML")


def test_cors_content_md5_is_checked_when_present(s3_stack, s3_keys, s3):
    body = (b"<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"
            b"</CORSRule></CORSConfiguration>")
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    r = raw(s3_stack, s3_keys, "PUT", "/web?cors", body, headers={"Content-MD5": wrong})
    assert (r.status_code, xml_code(r)) == (400, "BadDigest")
    assert s3.get_bucket_cors(Bucket="web")["CORSRules"][0] == RULES[0]
    s3.create_bucket(Bucket="md5-cors")
    right = base64.b64encode(hashlib.md5(body).digest()).decode()
    r = raw(s3_stack, s3_keys, "PUT", "/md5-cors?cors", body, headers={"Content-MD5": right})
    assert r.status_code == 200
    assert s3.get_bucket_cors(Bucket="md5-cors")["CORSRules"] == [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]


# --- preflight ------------------------------------------------------------------------------------

def test_a_matching_preflight_is_answered_without_a_signature(s3_stack, s3):
    r = preflight(s3_stack, "/web/uploads/photo.jpg", "http://app.example", "PUT", "Content-Type, X-Amz-Date")
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert r.headers["Access-Control-Allow-Methods"] == "PUT, POST"
    assert r.headers["Access-Control-Allow-Headers"] == "Content-Type, X-Amz-Date"
    assert r.headers["Access-Control-Max-Age"] == "600"
    assert r.headers["Access-Control-Expose-Headers"] == "ETag, x-amz-request-id"
    assert r.headers["Access-Control-Allow-Credentials"] == "true"
    assert r.headers["Vary"].startswith("Origin")
    assert r.content == b""


def test_a_wildcard_origin_rule_answers_star(s3_stack, s3):
    r = preflight(s3_stack, "/web/page.txt", "http://anyone.test", "GET")
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    assert "Access-Control-Allow-Credentials" not in r.headers


def test_a_wildcard_in_an_origin_matches_a_subdomain(s3_stack, s3):
    r = preflight(s3_stack, "/web/k", "https://cdn.example.org", "POST")
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "https://cdn.example.org"
    r = preflight(s3_stack, "/web/k", "http://cdn.example.org", "POST")  # wrong scheme: no rule allows POST
    assert (r.status_code, xml_code(r)) == (403, "AccessForbidden")


def test_a_preflight_of_a_multipart_upload_call_is_answered(s3_stack, s3):
    r = preflight(s3_stack, "/web/big.bin?uploads", "http://app.example", "POST")
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "http://app.example"
    r = preflight(s3_stack, "/web/big.bin?partNumber=1&uploadId=x", "http://app.example", "PUT")
    assert r.status_code == 200


@pytest.mark.parametrize("origin,method,headers", [
    ("http://evil.example", "PUT", None),  # origin no rule names
    ("http://app.example", "DELETE", None),  # method no rule allows
    ("http://app.example", "PUT", "authorization"),  # header no rule allows
    ("http://anyone.test", "GET", "x-custom"),  # the * rule allows no header
])
def test_a_preflight_no_rule_allows_is_403_access_forbidden(s3_stack, s3, origin, method, headers):
    r = preflight(s3_stack, "/web/k", origin, method, headers)
    assert (r.status_code, xml_code(r)) == (403, "AccessForbidden")
    assert "CORSResponse: This CORS request is not allowed" in r.text
    assert "Access-Control-Allow-Origin" not in r.headers


def test_a_preflight_needs_an_origin_and_a_method_and_a_bucket_with_cors(s3_stack, s3):
    r = preflight(s3_stack, "/web/k", None, "GET")
    assert (r.status_code, xml_code(r)) == (400, "BadRequest")
    assert "Origin request header needed" in r.text
    r = preflight(s3_stack, "/web/k", "http://app.example", None)
    assert (r.status_code, xml_code(r)) == (400, "BadRequest")
    s3.create_bucket(Bucket="no-cors")
    for path in ("/no-cors/k", "/no-such-bucket/k", "/"):
        r = preflight(s3_stack, path, "http://app.example", "GET")
        assert (r.status_code, xml_code(r)) == (403, "AccessForbidden"), path


# --- actual requests -------------------------------------------------------------------------------

def test_an_actual_request_gets_the_headers_of_the_first_matching_rule(s3_stack, s3):
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "web", "Key": "page.txt"})
    r = requests.get(url, headers={"Origin": "http://anyone.test"}, timeout=30)
    assert r.status_code == 200 and r.content == b"hello"
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    r = requests.get(url, headers={"Origin": "http://app.example"}, timeout=30)  # rule 0 lacks GET: rule 1
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "web", "Key": "from-app.txt"})
    r = requests.put(url, data=b"uploaded", headers={"Origin": "http://app.example"}, timeout=30)
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert r.headers["Access-Control-Expose-Headers"] == "ETag, x-amz-request-id"
    assert r.headers["ETag"] == f'"{hashlib.md5(b"uploaded").hexdigest()}"'


def test_an_actual_request_no_rule_allows_gets_no_cors_headers(s3_stack, s3):
    url = s3.generate_presigned_url("delete_object", Params={"Bucket": "web", "Key": "nothing"})
    r = requests.delete(url, headers={"Origin": "http://app.example"}, timeout=30)
    assert r.status_code == 204
    assert not any(h.lower().startswith("access-control-") for h in r.headers)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "web", "Key": "page.txt"})
    r = requests.get(url, timeout=30)  # no Origin: not a cross-origin request
    assert "Access-Control-Allow-Origin" not in r.headers


def test_an_error_answer_carries_the_cors_headers_too(s3_stack, s3):
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "web", "Key": "missing"})
    r = requests.get(url, headers={"Origin": "http://anyone.test"}, timeout=30)
    assert (r.status_code, xml_code(r)) == (404, "NoSuchKey")
    assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_an_actual_request_naming_a_method_is_matched_on_that_method(s3_stack, s3):
    # an anonymous PUT to a bucket nobody else may write: refused, with the headers of the rule
    # allowing the method Access-Control-Request-Method names (GET: rule 1), as S3 answers it
    url = f"{s3_stack.s3_url}/web/anon.txt"
    r = requests.put(url, data=b"", headers={"Origin": "http://anyone.test", "Access-Control-Request-Method": "GET"},
                     timeout=30)
    assert (r.status_code, xml_code(r)) == (403, "AccessDenied")
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert r.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    r = requests.put(url, data=b"", headers={"Origin": "http://anyone.test"}, timeout=30)  # PUT: no rule for *
    assert r.status_code == 403 and "Access-Control-Allow-Origin" not in r.headers


# --- tagging -----------------------------------------------------------------------------------------

def test_bucket_tagging_round_trips_and_deletes(s3_stack, s3):
    s3.create_bucket(Bucket="tagged")
    assert failure(s3.get_bucket_tagging, Bucket="tagged") == ("NoSuchTagSet", 404)
    tags = [{"Key": "team", "Value": "storage"}, {"Key": "cost centre/é", "Value": ""},
            {"Key": "a+b=c.d_e:f/g@h", "Value": "ünïcødé 値"}]
    put = s3.put_bucket_tagging(Bucket="tagged", Tagging={"TagSet": tags})
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert s3.get_bucket_tagging(Bucket="tagged")["TagSet"] == tags
    assert bucket_doc(s3_stack, "tagged")["config"]["tagging"]["tags"][0] == ["team", "storage"]
    s3.put_bucket_tagging(Bucket="tagged", Tagging={"TagSet": tags[:1]})  # a put replaces the set
    assert s3.get_bucket_tagging(Bucket="tagged")["TagSet"] == tags[:1]
    assert s3.delete_bucket_tagging(Bucket="tagged")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert failure(s3.get_bucket_tagging, Bucket="tagged") == ("NoSuchTagSet", 404)
    assert "tagging" not in bucket_doc(s3_stack, "tagged")["config"]


def test_bucket_tagging_limits_are_s3s(s3_stack, s3_keys, s3):
    s3.create_bucket(Bucket="tag-limits")
    most = [{"Key": f"{i:02d}" + "k" * 126, "Value": "v" * 256} for i in range(50)]
    s3.put_bucket_tagging(Bucket="tag-limits", Tagging={"TagSet": most})
    assert s3.get_bucket_tagging(Bucket="tag-limits")["TagSet"] == most
    for tag_set in ([*most, {"Key": "one-more", "Value": ""}],
                    [{"Key": "k" * 129, "Value": ""}],
                    [{"Key": "k", "Value": "v" * 257}],
                    [{"Key": "same", "Value": "1"}, {"Key": "same", "Value": "2"}],
                    [{"Key": "aws:createdBy", "Value": "me"}],
                    [{"Key": "AWS:x", "Value": "me"}],
                    [{"Key": "semi;colon", "Value": "v"}],
                    [{"Key": "k", "Value": "<&>"}]):
        assert failure(s3.put_bucket_tagging, Bucket="tag-limits", Tagging={"TagSet": tag_set}) \
            == ("InvalidTag", 400), tag_set
    r = raw(s3_stack, s3_keys, "PUT", "/tag-limits?tagging",  # boto3 itself refuses an empty key
            b"<Tagging><TagSet><Tag><Key></Key><Value>v</Value></Tag></TagSet></Tagging>")
    assert (r.status_code, xml_code(r)) == (400, "InvalidTag")
    assert s3.get_bucket_tagging(Bucket="tag-limits")["TagSet"] == most  # unchanged


@pytest.mark.parametrize("body", [b"<not-xml", b"<CORSConfiguration/>", b"<Tagging/>",
                                  b"<Tagging><TagSet><Tag><Key>k</Key></Tag></TagSet></Tagging>",
                                  b"<Tagging><TagSet><Tag><Key>k</Key><Value>v</Value><Value>w</Value></Tag>"
                                  b"</TagSet></Tagging>",
                                  b'<!DOCTYPE x [<!ENTITY e "boom">]><Tagging><TagSet><Tag><Key>&e;</Key>'
                                  b"<Value>v</Value></Tag></TagSet></Tagging>"])
def test_malformed_tagging_xml_is_malformed_xml(s3_stack, s3_keys, s3, body):
    r = raw(s3_stack, s3_keys, "PUT", "/web?tagging", body)
    assert (r.status_code, xml_code(r)) == (400, "MalformedXML")
