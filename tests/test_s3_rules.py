"""The rule engines on their own: POST policy conditions and CORS rule matching."""
from __future__ import annotations

import base64
import json

import pytest

from app.s3 import errors as s3e
from app.s3.cors import matching_rule, parse_cors, wildcard_match
from app.s3.post import check_policy, parse_policy
from app.s3.tagging import parse_tagging


def policy(*conditions, expiration: str = "2099-01-01T00:00:00.000Z"):
    return parse_policy(base64.b64encode(json.dumps({"expiration": expiration,
                                                     "conditions": list(conditions)}).encode()).decode())


def test_exact_match_is_case_insensitive_in_the_name_and_exact_in_the_value():
    p = policy({"Content-Type": "image/png"})
    check_policy(p, {"content-type": "image/png"}, now=0)
    with pytest.raises(s3e.AccessDenied, match="Policy Condition failed"):
        check_policy(p, {"content-type": "image/PNG"}, now=0)
    with pytest.raises(s3e.AccessDenied, match="Policy Condition failed"):
        check_policy(p, {}, now=0)  # a named field that is missing fails its condition


def test_eq_and_starts_with():
    p = policy(["eq", "$Key", "a/b"], ["starts-with", "$x-amz-meta-tag", ""])
    check_policy(p, {"key": "a/b", "x-amz-meta-tag": "anything"}, now=0)
    check_policy(p, {"key": "a/b"}, now=0)  # starts-with "" allows the field to be absent
    with pytest.raises(s3e.AccessDenied):
        check_policy(p, {"key": "a/bc"}, now=0)
    p = policy(["starts-with", "$key", "user/"])
    check_policy(p, {"key": "user/x"}, now=0)
    with pytest.raises(s3e.AccessDenied):
        check_policy(p, {"key": "users/x"}, now=0)


def test_content_length_range_is_the_intersection_of_the_ranges():
    assert policy(["content-length-range", 1, 100], ["content-length-range", "10", "1000"]).length_range == (10, 100)
    assert policy({"key": "k"}).length_range is None


def test_expiry_and_extra_fields():
    p = policy({"key": "k"}, expiration="2020-01-01T00:00:00Z")
    with pytest.raises(s3e.AccessDenied, match="Policy expired"):
        check_policy(p, {"key": "k"}, now=1.6e9)
    p = policy({"key": "k"})
    check_policy(p, {"key": "k", "policy": "...", "x-amz-signature": "s", "file": "", "x-ignore-me": "1"}, now=0)
    with pytest.raises(s3e.AccessDenied, match="Extra input fields: acl, zeta"):
        check_policy(p, {"key": "k", "zeta": "1", "acl": "private"}, now=0)


@pytest.mark.parametrize("document", [
    {"expiration": "2099-01-01T00:00:00Z", "conditions": [["eq", "key", "k"]]},  # no "$"
    {"expiration": "2099-01-01T00:00:00Z", "conditions": [["starts-with", "$key"]]},
    {"expiration": "2099-01-01T00:00:00Z", "conditions": [{"key": 5}]},
    {"expiration": "2099-01-01T00:00:00Z", "conditions": [["content-length-range", "a", 5]]},
    {"expiration": "2099-13-01T00:00:00Z", "conditions": []},
    ["not", "an", "object"],
])
def test_malformed_policies_are_invalid_policy_documents(document):
    with pytest.raises(s3e.InvalidPolicyDocument):
        parse_policy(base64.b64encode(json.dumps(document).encode()).decode())
    with pytest.raises(s3e.InvalidPolicyDocument):
        parse_policy("%%% not base64")


def test_wildcards_match_one_run_of_characters():
    assert wildcard_match("https://*.example.org", "https://cdn.example.org")
    assert not wildcard_match("https://*.example.org", "https://example.org")
    assert wildcard_match("*", "http://anything")
    assert wildcard_match("x-amz-*", "X-Amz-Date", fold=True)
    assert not wildcard_match("x-amz-*", "X-Amz-Date")


def test_the_first_rule_allowing_origin_method_and_every_header_wins():
    rules = parse_cors(b"<CORSConfiguration>"
                       b"<CORSRule><ID>a</ID><AllowedOrigin>http://a.test</AllowedOrigin>"
                       b"<AllowedMethod>PUT</AllowedMethod>"
                       b"<AllowedHeader>content-*</AllowedHeader></CORSRule>"
                       b"<CORSRule><ID>b</ID><AllowedOrigin>*</AllowedOrigin><AllowedMethod>PUT</AllowedMethod>"
                       b"<AllowedHeader>*</AllowedHeader></CORSRule>"
                       b"</CORSConfiguration>")
    assert matching_rule(rules, "http://a.test", "PUT", ["Content-Type"])["id"] == "a"
    assert matching_rule(rules, "http://a.test", "PUT", ["Content-Type", "x-amz-date"])["id"] == "b"
    assert matching_rule(rules, "http://b.test", "PUT")["id"] == "b"
    assert matching_rule(rules, "http://a.test", "GET") is None


def test_tag_keys_compare_exactly_and_values_may_be_empty():
    tags = parse_tagging(b"<Tagging><TagSet><Tag><Key>Env</Key><Value></Value></Tag>"
                         b"<Tag><Key>env</Key><Value>prod</Value></Tag></TagSet></Tagging>")
    assert tags == [("Env", ""), ("env", "prod")]
