"""pipeline.access.permissions on its own: AWS's evaluation order, each condition operator, wildcards,
canned ACLs, and failing closed."""
from __future__ import annotations

import pytest

from pipeline.access.permissions import (ALL_USERS, AUTHENTICATED_USERS, FULL_CONTROL, READ, WRITE, Acl, Grant, Request,
                                  Statement, acl_grants, canned, condition_holds, decide, policy_is_public,
                                  wildcard_match)

OWNER = "acme"
OTHER = "globex"
BUCKET = "data"


def allow(principals=("*",), actions=("s3:getobject",), resources=("arn:aws:s3:::data/*",), conditions=()):
    return Statement("Allow", tuple(principals), tuple(actions), tuple(resources), tuple(conditions))


def deny(principals=("*",), actions=("s3:*",), resources=("arn:aws:s3:::data/*",), conditions=()):
    return Statement("Deny", tuple(principals), tuple(actions), tuple(resources), tuple(conditions))


PUBLIC_READ = canned("public-read", OWNER)
PUBLIC_RW = canned("public-read-write", OWNER)
PRIVATE = canned("private", OWNER)


@pytest.mark.parametrize("name, request_, bucket_acl, policy, object_acl, allowed", [
    ("the owner is allowed without any grant",
     Request(OWNER, "s3:GetObject", BUCKET, "k"), PRIVATE, (), None, True),
    ("an explicit deny beats the owner",
     Request(OWNER, "s3:GetObject", BUCKET, "k"), PRIVATE, (deny(),), None, False),
    ("the owner keeps its policy whatever the policy denies",
     Request(OWNER, "s3:DeleteBucketPolicy", BUCKET), PRIVATE,
     (deny(resources=("arn:aws:s3:::data", "arn:aws:s3:::data/*")),), None, True),
    ("an explicit deny beats an allow of the policy",
     Request(OTHER, "s3:GetObject", BUCKET, "k"), PRIVATE, (allow(), deny(principals=(OTHER,))), None, False),
    ("an explicit deny beats a public ACL",
     Request(None, "s3:GetObject", BUCKET, "k"), PRIVATE, (deny(),), PUBLIC_READ, False),
    ("another tenant with no grant is implicitly denied",
     Request(OTHER, "s3:GetObject", BUCKET, "k"), PRIVATE, (), PRIVATE, False),
    ("an object's public-read ACL lets anyone read it",
     Request(None, "s3:GetObject", BUCKET, "k"), PRIVATE, (), PUBLIC_READ, True),
    ("a bucket's public-read ACL does not open its objects",
     Request(None, "s3:GetObject", BUCKET, "k"), PUBLIC_READ, (), PRIVATE, False),
    ("a bucket's public-read ACL lets anyone list",
     Request(None, "s3:ListBucket", BUCKET), PUBLIC_READ, (), None, True),
    ("a bucket's public-read-write ACL lets anyone write",
     Request(None, "s3:PutObject", BUCKET, "k"), PUBLIC_RW, (), None, True),
    ("public-read does not let anyone write",
     Request(None, "s3:PutObject", BUCKET, "k"), PUBLIC_READ, (), None, False),
    ("a grant to a tenant's canonical id",
     Request(OTHER, "s3:ListBucket", BUCKET), Acl(OWNER, (Grant(OTHER, READ),)), (), None, True),
    ("authenticated-read lets tenants read, not anonymous",
     Request(None, "s3:ListBucket", BUCKET), canned("authenticated-read", OWNER), (), None, False),
    ("a policy allow to a tenant",
     Request(OTHER, "s3:GetObject", BUCKET, "k"), PRIVATE, (allow(principals=(OTHER,)),), None, True),
    ("a policy allow to a tenant does not allow another",
     Request("initech", "s3:GetObject", BUCKET, "k"), PRIVATE, (allow(principals=(OTHER,)),), None, False),
    ("a policy allow with a prefix resource, inside it",
     Request(None, "s3:GetObject", BUCKET, "pub/a"), PRIVATE,
     (allow(resources=("arn:aws:s3:::data/pub/*",)),), None, True),
    ("a policy allow with a prefix resource, outside it",
     Request(None, "s3:GetObject", BUCKET, "priv/a"), PRIVATE,
     (allow(resources=("arn:aws:s3:::data/pub/*",)),), None, False),
    ("a listing allowed with an s3:prefix condition",
     Request(OTHER, "s3:ListBucket", BUCKET, prefix="home/globex/"), PRIVATE,
     (allow(principals=(OTHER,), actions=("s3:listbucket",), resources=("arn:aws:s3:::data",),
            conditions=(("StringLike", "s3:prefix", ("home/globex/*",)),)),), None, True),
    ("a listing outside the s3:prefix condition",
     Request(OTHER, "s3:ListBucket", BUCKET, prefix="home/acme/"), PRIVATE,
     (allow(principals=(OTHER,), actions=("s3:listbucket",), resources=("arn:aws:s3:::data",),
            conditions=(("StringLike", "s3:prefix", ("home/globex/*",)),)),), None, False),
    ("SourceIp inside the network",
     Request(None, "s3:GetObject", BUCKET, "k", source_ip="127.0.0.1"), PRIVATE,
     (allow(conditions=(("IpAddress", "aws:sourceip", ("127.0.0.1/32",)),)),), None, True),
    ("SourceIp outside the network",
     Request(None, "s3:GetObject", BUCKET, "k", source_ip="127.0.0.1"), PRIVATE,
     (allow(conditions=(("IpAddress", "aws:sourceip", ("10.0.0.0/8",)),)),), None, False),
    ("a deny NotIpAddress from elsewhere",
     Request(OTHER, "s3:GetObject", BUCKET, "k", source_ip="127.0.0.1"), PRIVATE,
     (allow(), deny(conditions=(("NotIpAddress", "aws:sourceip", ("10.0.0.0/8",)),))), None, False),
    ("an action wildcard",
     Request(None, "s3:GetObjectAcl", BUCKET, "k"), PRIVATE, (allow(actions=("s3:get*",)),), None, True),
    ("a policy on another action does not allow",
     Request(None, "s3:DeleteObject", BUCKET, "k"), PRIVATE, (allow(),), None, False),
])
def test_evaluation_order(name, request_, bucket_acl, policy, object_acl, allowed):
    assert bool(decide(request_, OWNER, bucket_acl, policy, object_acl)) is allowed, name


def test_an_explicit_deny_is_reported_as_explicit():
    decision = decide(Request(OTHER, "s3:GetObject", BUCKET, "k"), OWNER, PRIVATE, (deny(),))
    assert not decision and decision.explicit


@pytest.mark.parametrize("operator, value, wanted, holds", [
    ("StringEquals", "a", ("a", "b"), True), ("StringEquals", "c", ("a",), False),
    ("StringEquals", None, ("a",), False), ("StringNotEquals", "c", ("a",), True),
    ("StringNotEquals", "a", ("a",), False), ("StringNotEquals", None, ("a",), True),
    ("StringLike", "home/x", ("home/*",), True), ("StringLike", "homes", ("home?",), True),
    ("StringLike", "other", ("home/*",), False), ("StringNotLike", "other", ("home/*",), True),
    ("IpAddress", "10.1.2.3", ("10.0.0.0/8",), True), ("IpAddress", "11.1.2.3", ("10.0.0.0/8",), False),
    ("IpAddress", "not-an-ip", ("10.0.0.0/8",), False), ("NotIpAddress", "11.1.2.3", ("10.0.0.0/8",), True),
    ("IpAddress", "::1", ("::1/128",), True),
    ("NumericEquals", "1", ("1",), False),  # unknown operators fail closed
])
def test_each_condition_operator(operator, value, wanted, holds):
    assert condition_holds(operator, value, wanted) is holds


def test_wildcards_are_iams_not_fnmatchs():
    assert wildcard_match("arn:aws:s3:::b/[a]*", "arn:aws:s3:::b/[a]x")
    assert not wildcard_match("arn:aws:s3:::b/[a]*", "arn:aws:s3:::b/ax")
    assert wildcard_match("s3:get*", "s3:GetObject", case_sensitive=False)
    assert not wildcard_match("arn:aws:s3:::b/A*", "arn:aws:s3:::b/a")


def test_canned_acls():
    assert canned("private", OWNER).grants == (Grant(OWNER, FULL_CONTROL),)
    assert Grant(ALL_USERS, WRITE) in canned("public-read-write", OWNER).grants
    assert Grant(AUTHENTICATED_USERS, READ) in canned("authenticated-read", OWNER).grants
    assert Grant(OTHER, FULL_CONTROL) in canned("bucket-owner-full-control", OWNER, OTHER).grants
    assert canned("bucket-owner-read", OWNER, OWNER).grants == (Grant(OWNER, FULL_CONTROL),)
    assert acl_grants(Acl(OWNER, (Grant(OTHER, FULL_CONTROL),)), OTHER, WRITE)
    assert not acl_grants(Acl(OWNER, (Grant(OTHER, READ),)), OTHER, WRITE)


def test_acl_round_trips_through_its_stored_form():
    acl = canned("public-read", OWNER)
    assert Acl.from_mongo(acl.to_mongo(), OWNER) == acl
    assert Acl.from_mongo(None, OWNER) == canned("private", OWNER)


def test_policy_status_is_public_only_for_an_unconditioned_allow_to_everyone():
    assert policy_is_public((allow(),))
    assert not policy_is_public((allow(principals=(OTHER,)),))
    assert not policy_is_public((allow(conditions=(("IpAddress", "aws:sourceip", ("10.0.0.0/8",)),)),))
    assert not policy_is_public((deny(),))
