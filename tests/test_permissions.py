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


# --- public access block, ownership, further condition keys, grant order --------------------------

from pipeline.access.permissions import (NO_BLOCK, OBJECT_WRITER, OWNER_ENFORCED, OWNER_PREFERRED,  # noqa: E402
                                         PublicAccessBlock, acl_allowed_by_ownership, bucket_acl_fits_ownership,
                                         bucket_is_public, object_owner, refuses_acl, refuses_policy,
                                         valid_condition_key)


def test_ignore_public_acls_drops_group_grants_but_keeps_a_tenants_grant():
    acl = Acl(OWNER, (Grant(OWNER, FULL_CONTROL), Grant(ALL_USERS, READ), Grant(OTHER, READ)))
    block = PublicAccessBlock(ignore_public_acls=True)
    assert decide(Request(None, "s3:ListBucket", BUCKET), OWNER, acl)
    assert not decide(Request(None, "s3:ListBucket", BUCKET), OWNER, acl, block=block)
    assert decide(Request(OTHER, "s3:ListBucket", BUCKET), OWNER, acl, block=block)


def test_restrict_public_buckets_ignores_a_public_policy_for_all_but_the_owner():
    policy = (allow(),)
    block = PublicAccessBlock(restrict_public_buckets=True)
    req = Request(None, "s3:GetObject", BUCKET, "k")
    assert decide(req, OWNER, policy=policy)
    assert not decide(req, OWNER, policy=policy, block=block)
    assert decide(Request(OWNER, "s3:GetObject", BUCKET, "k"), OWNER, policy=policy, block=block)
    # a policy naming a tenant is not public: still honoured
    assert decide(Request(OTHER, "s3:GetObject", BUCKET, "k"), OWNER, policy=(allow((OTHER,)),), block=block)


def test_block_public_acls_and_policy_refuse_only_public_ones():
    block = PublicAccessBlock(block_public_acls=True, block_public_policy=True)
    assert refuses_acl(block, PUBLIC_READ) and refuses_acl(block, canned("authenticated-read", OWNER))
    assert not refuses_acl(block, PRIVATE) and not refuses_acl(NO_BLOCK, PUBLIC_READ)
    assert refuses_policy(block, (allow(),)) and not refuses_policy(block, (allow((OTHER,)),))


def test_bucket_is_public_from_its_policy_or_its_acl_unless_blocked():
    assert not bucket_is_public((), PRIVATE)
    assert bucket_is_public((), PUBLIC_READ) and bucket_is_public((allow(),), PRIVATE)
    assert not bucket_is_public((), PUBLIC_READ, PublicAccessBlock(ignore_public_acls=True))
    assert not bucket_is_public((allow(),), PRIVATE, PublicAccessBlock(restrict_public_buckets=True))


def test_block_round_trips_through_its_stored_form():
    block = PublicAccessBlock(True, False, True, False)
    assert PublicAccessBlock.from_mongo(block.to_mongo()) == block
    assert PublicAccessBlock.from_mongo(None) == NO_BLOCK


@pytest.mark.parametrize("rule, writer, canned_acl, owner", [
    (None, OTHER, None, OTHER), (OBJECT_WRITER, OTHER, "bucket-owner-full-control", OTHER),
    (OWNER_PREFERRED, OTHER, "bucket-owner-full-control", OWNER), (OWNER_PREFERRED, OTHER, "private", OTHER),
    (OWNER_ENFORCED, OTHER, None, OWNER), (None, None, None, OWNER)])
def test_object_owner_follows_the_ownership_rule(rule, writer, canned_acl, owner):
    assert object_owner(rule, writer, OWNER, canned_acl) == owner


def test_bucket_owner_enforced_disables_acls_but_bucket_owner_full_control():
    assert acl_allowed_by_ownership(OWNER_ENFORCED, "bucket-owner-full-control")
    assert not acl_allowed_by_ownership(OWNER_ENFORCED, "private")
    assert not acl_allowed_by_ownership(OWNER_ENFORCED, None, sets_acl=True)
    assert acl_allowed_by_ownership(OWNER_PREFERRED, "public-read", sets_acl=True)
    assert bucket_acl_fits_ownership(OWNER_ENFORCED, PRIVATE)
    assert not bucket_acl_fits_ownership(OWNER_ENFORCED, PUBLIC_READ)


def test_the_bucket_owner_reads_another_tenants_object_only_through_its_acl():
    theirs = Acl(OTHER, (Grant(OTHER, FULL_CONTROL),))
    shared = Acl(OTHER, (Grant(OTHER, FULL_CONTROL), Grant(OWNER, READ)))
    assert not decide(Request(OWNER, "s3:GetObjectAcl", BUCKET, "k"), OWNER, object_acl=theirs)
    assert decide(Request(OWNER, "s3:GetObject", BUCKET, "k"), OWNER, object_acl=shared)
    assert decide(Request(OTHER, "s3:GetObjectAcl", BUCKET, "k"), OWNER, object_acl=theirs)
    assert decide(Request(OWNER, "s3:DeleteObject", BUCKET, "k"), OWNER, object_acl=theirs)


@pytest.mark.parametrize("operator, value, holds", [
    ("StringLikeIfExists", None, True), ("StringLikeIfExists", "http://a.example/x", True),
    ("StringLikeIfExists", "http://b.example/", False), ("StringEqualsIfExists", None, True),
    ("StringNotEqualsIfExists", "http://a.example/x", True)])
def test_if_exists_operators_hold_when_the_key_is_missing(operator, value, holds):
    assert condition_holds(operator, value, ("http://a.example/*",)) is holds


def test_condition_keys_from_the_request_context():
    stmt = allow(actions=("s3:putobject",), conditions=(("StringEquals", "s3:requestobjecttag/security", ("public",)),))
    tagged = Request(OTHER, "s3:PutObject", BUCKET, "k", context=(("s3:requestobjecttag/security", ("public",)),))
    assert decide(tagged, OWNER, policy=(stmt,))
    assert not decide(Request(OTHER, "s3:PutObject", BUCKET, "k"), OWNER, policy=(stmt,))
    copy = allow(actions=("s3:putobject",), conditions=(("StringLike", "s3:x-amz-copy-source", ("data/public/*",)),))
    ctx = (("s3:x-amz-copy-source", ("data/public/a",)),)
    assert decide(Request(OTHER, "s3:PutObject", BUCKET, "k", context=ctx), OWNER, policy=(copy,))
    keys = Request(OTHER, "s3:PutObject", BUCKET, "k", context=(("s3:requestobjecttagkeys", ("a", "b")),))
    any_b = allow(actions=("s3:putobject",), conditions=(("StringEquals", "s3:requestobjecttagkeys", ("b",)),))
    assert decide(keys, OWNER, policy=(any_b,))


def test_valid_condition_keys():
    assert valid_condition_key("s3:existingobjecttag/security") and valid_condition_key("s3:x-amz-acl")
    assert not valid_condition_key("s3:existingobjecttag/") and not valid_condition_key("s3:nonsense")


def test_groups_are_listed_before_canonical_users():
    acl = Acl(OWNER, (Grant(OWNER, FULL_CONTROL), Grant(OTHER, READ), Grant(ALL_USERS, READ)))
    assert [g.grantee for g in acl.listed()] == [ALL_USERS, OWNER, OTHER]
