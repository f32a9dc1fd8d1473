"""Who may do what: the one decision of every S3 request, from the bucket's ACL and policy and the
object's ACL. Pure: no Flask, no MongoDB; the S3 front end parses and stores, this module decides.

Identities are tenants: a tenant's canonical id is its name; ``None`` is an anonymous (unsigned)
requester. An object belongs to the owner of its ACL: its writer, or the bucket owner as the
bucket's ownership controls say (``object_owner``); the bucket owner reads another tenant's
object only through that object's ACL.

A bucket's public access block (``PublicAccessBlock``) narrows what ACLs and policies may do:
IgnorePublicAcls drops grants to the AllUsers and AuthenticatedUsers groups from every decision,
RestrictPublicBuckets drops the Allow statements of a public policy for everyone but the owner,
and BlockPublicAcls / BlockPublicPolicy refuse writes of a public ACL or policy
(``refuses_acl``, ``refuses_policy``).

The order is AWS's (bucket policy evaluation, without IAM user policies): an explicit Deny of a
matching policy statement wins; then the bucket owner is allowed (its own account's access); then
any matching Allow statement or ACL grant allows; otherwise the request is implicitly denied. The
owner may always read, write and delete its bucket's policy, so that no policy locks it out.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTHENTICATED_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
GROUPS = (ALL_USERS, AUTHENTICATED_USERS)

READ, WRITE, READ_ACP, WRITE_ACP, FULL_CONTROL = "READ", "WRITE", "READ_ACP", "WRITE_ACP", "FULL_CONTROL"
PERMISSIONS = (READ, WRITE, READ_ACP, WRITE_ACP, FULL_CONTROL)

CANNED_ACLS = ("private", "public-read", "public-read-write", "authenticated-read", "bucket-owner-read",
               "bucket-owner-full-control")

# the ACL permission that grants an action; actions missing here are never granted by an ACL.
# Object writes and deletes are granted by the bucket's ACL (WRITE), object reads by the object's.
BUCKET_ACL_ACTIONS = {
    "s3:ListBucket": READ, "s3:ListBucketVersions": READ, "s3:ListBucketMultipartUploads": READ,
    "s3:PutObject": WRITE, "s3:DeleteObject": WRITE, "s3:AbortMultipartUpload": WRITE,
    "s3:ListMultipartUploadParts": WRITE,
    "s3:GetBucketAcl": READ_ACP, "s3:PutBucketAcl": WRITE_ACP,
}
OBJECT_ACL_ACTIONS = {"s3:GetObject": READ, "s3:GetObjectAttributes": READ, "s3:GetObjectAcl": READ_ACP,
                      "s3:PutObjectAcl": WRITE_ACP}
# what the owner keeps whatever its policy denies (AWS: the account that owns the bucket)
OWNER_KEEPS = frozenset({"s3:GetBucketPolicy", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy"})

POLICY_ACTIONS = ("GetBucketPublicAccessBlock", "PutBucketPublicAccessBlock", "GetBucketOwnershipControls",
                  "PutBucketOwnershipControls", "PutBucketVersioning", "GetObject", "PutObject", "DeleteObject", "GetObjectAcl", "PutObjectAcl", "GetObjectAttributes",
                  "GetObjectTagging", "PutObjectTagging", "DeleteObjectTagging", "AbortMultipartUpload",
                  "ListMultipartUploadParts", "ListBucket", "ListBucketVersions", "ListBucketMultipartUploads",
                  "GetBucketLocation", "GetBucketVersioning", "GetBucketAcl", "PutBucketAcl", "GetBucketPolicy",
                  "PutBucketPolicy", "DeleteBucketPolicy", "GetBucketPolicyStatus", "GetBucketCORS",
                  "PutBucketCORS", "GetBucketTagging", "PutBucketTagging", "GetLifecycleConfiguration",
                  "PutLifecycleConfiguration", "DeleteBucket", "CreateBucket", "GetObjectRetention",
                  "PutObjectRetention", "GetObjectLegalHold", "PutObjectLegalHold", "BypassGovernanceRetention",
                  "GetBucketObjectLockConfiguration", "PutBucketObjectLockConfiguration")
# actions on objects (resource arn:aws:s3:::bucket/key); the others are on the bucket
OBJECT_ACTIONS = frozenset({"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:GetObjectAcl",
                            "s3:PutObjectAcl", "s3:GetObjectAttributes", "s3:GetObjectTagging",
                            "s3:PutObjectTagging", "s3:DeleteObjectTagging", "s3:AbortMultipartUpload",
                            "s3:ListMultipartUploadParts", "s3:GetObjectRetention", "s3:PutObjectRetention",
                            "s3:GetObjectLegalHold", "s3:PutObjectLegalHold", "s3:BypassGovernanceRetention"})

_BASE_OPERATORS = ("StringEquals", "StringNotEquals", "StringLike", "StringNotLike", "IpAddress", "NotIpAddress")
# each with its ...IfExists form: true when the request lacks the key
CONDITION_OPERATORS = _BASE_OPERATORS + tuple(o + "IfExists" for o in _BASE_OPERATORS)
CONDITION_KEYS = ("s3:prefix", "aws:sourceip", "aws:referer", "s3:x-amz-copy-source", "s3:x-amz-metadata-directive", "s3:x-amz-acl",
                  "s3:x-amz-grant-read", "s3:x-amz-grant-write", "s3:x-amz-grant-read-acp",
                  "s3:x-amz-grant-write-acp", "s3:x-amz-grant-full-control", "s3:requestobjecttagkeys")
# keys that name a tag: "s3:existingobjecttag/<key>" (the object's), "s3:requestobjecttag/<key>" (the request's)
CONDITION_KEY_PREFIXES = ("s3:existingobjecttag/", "s3:requestobjecttag/")


def valid_condition_key(key: str) -> bool:
    """Whether this module can evaluate a condition key (lower case)."""
    return key in CONDITION_KEYS or any(key.startswith(p) and len(key) > len(p) for p in CONDITION_KEY_PREFIXES)


@dataclass(frozen=True)
class Grant:
    grantee: str  # a tenant's canonical id, or ALL_USERS / AUTHENTICATED_USERS
    permission: str


@dataclass(frozen=True)
class Acl:
    owner: str
    grants: tuple[Grant, ...]

    def to_mongo(self) -> dict:
        return {"owner": self.owner, "grants": [[g.grantee, g.permission] for g in self.grants]}

    @classmethod
    def from_mongo(cls, doc: dict | None, owner: str) -> "Acl":
        """A stored ACL; none stored is the default: the owner holds FULL_CONTROL."""
        if not doc:
            return private(owner)
        return cls(doc.get("owner") or owner, tuple(Grant(g, p) for g, p in doc.get("grants") or ()))

    def is_public(self) -> bool:
        return any(g.grantee in GROUPS for g in self.grants)

    def listed(self) -> tuple[Grant, ...]:
        """The grants in the order S3 lists them: the groups' first, then the canonical users'."""
        return tuple(sorted(self.grants, key=lambda g: g.grantee not in GROUPS))


@dataclass(frozen=True)
class PublicAccessBlock:
    block_public_acls: bool = False
    ignore_public_acls: bool = False
    block_public_policy: bool = False
    restrict_public_buckets: bool = False

    def to_mongo(self) -> dict:
        return {"block_public_acls": self.block_public_acls, "ignore_public_acls": self.ignore_public_acls,
                "block_public_policy": self.block_public_policy,
                "restrict_public_buckets": self.restrict_public_buckets}

    @classmethod
    def from_mongo(cls, doc: dict | None) -> "PublicAccessBlock":
        return cls(**{k: bool(v) for k, v in (doc or {}).items() if k in cls.__dataclass_fields__})


NO_BLOCK = PublicAccessBlock()


def refuses_acl(block: PublicAccessBlock, acl: Acl | None) -> bool:
    """BlockPublicAcls: a request that would set a public ACL is refused."""
    return block.block_public_acls and acl is not None and acl.is_public()


def refuses_policy(block: PublicAccessBlock, policy: tuple["Statement", ...]) -> bool:
    """BlockPublicPolicy: a PutBucketPolicy of a public policy is refused."""
    return block.block_public_policy and policy_is_public(policy)


def private(owner: str) -> Acl:
    return Acl(owner, (Grant(owner, FULL_CONTROL),))


def canned(name: str, owner: str, bucket_owner: str | None = None) -> Acl:
    """The grants of a canned ACL (``x-amz-acl``); ``bucket_owner`` matters to the bucket-owner-* ones."""
    grants = [Grant(owner, FULL_CONTROL)]
    if name in ("public-read", "public-read-write"):
        grants.append(Grant(ALL_USERS, READ))
    if name == "public-read-write":
        grants.append(Grant(ALL_USERS, WRITE))
    if name == "authenticated-read":
        grants.append(Grant(AUTHENTICATED_USERS, READ))
    if bucket_owner and bucket_owner != owner:
        if name == "bucket-owner-read":
            grants.append(Grant(bucket_owner, READ))
        if name == "bucket-owner-full-control":
            grants.append(Grant(bucket_owner, FULL_CONTROL))
    return Acl(owner, tuple(grants))


# --- object ownership (ownership controls) -------------------------------------------------------

OBJECT_WRITER, OWNER_PREFERRED, OWNER_ENFORCED = "ObjectWriter", "BucketOwnerPreferred", "BucketOwnerEnforced"
OWNERSHIP_RULES = (OBJECT_WRITER, OWNER_PREFERRED, OWNER_ENFORCED)


def object_owner(rule: str | None, writer: str | None, bucket_owner: str, canned_acl: str | None) -> str:
    """Who owns an object a request writes: its writer (ObjectWriter, the rule of a bucket without
    ownership controls), the bucket owner under BucketOwnerEnforced, or under BucketOwnerPreferred
    when written with bucket-owner-full-control; an anonymous write's object is the bucket owner's."""
    if writer is None or rule == OWNER_ENFORCED:
        return bucket_owner
    if rule == OWNER_PREFERRED and canned_acl == "bucket-owner-full-control":
        return bucket_owner
    return writer


def acl_allowed_by_ownership(rule: str | None, canned_acl: str | None, sets_acl: bool = False) -> bool:
    """BucketOwnerEnforced disables ACLs: a write may only name bucket-owner-full-control, and
    PutBucketAcl / PutObjectAcl (``sets_acl``) are refused."""
    if rule != OWNER_ENFORCED:
        return True
    return not sets_acl and canned_acl == "bucket-owner-full-control"


def bucket_acl_fits_ownership(rule: str, acl: Acl) -> bool:
    """BucketOwnerEnforced needs a bucket ACL that grants nobody but the bucket owner."""
    return rule != OWNER_ENFORCED or all(g.grantee == acl.owner for g in acl.grants)


# --- policies ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Statement:
    effect: str  # "Allow" or "Deny"
    principals: tuple[str, ...]  # "*" or tenants
    actions: tuple[str, ...]  # patterns, lower case ("s3:get*")
    resources: tuple[str, ...]  # ARN patterns
    conditions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # (operator, key lower case, values)

    def to_mongo(self) -> dict:
        return {"effect": self.effect, "principals": list(self.principals), "actions": list(self.actions),
                "resources": list(self.resources), "conditions": [[o, k, list(v)] for o, k, v in self.conditions]}

    @classmethod
    def from_mongo(cls, doc: dict) -> "Statement":
        return cls(doc["effect"], tuple(doc["principals"]), tuple(doc["actions"]), tuple(doc["resources"]),
                   tuple((o, k, tuple(v)) for o, k, v in doc.get("conditions") or ()))

    def is_public(self) -> bool:
        """An Allow to everyone without a condition that narrows who (AWS's GetBucketPolicyStatus)."""
        return self.effect == "Allow" and "*" in self.principals and not any(
            k == "aws:sourceip" for _, k, _ in self.conditions)


@dataclass(frozen=True)
class Request:
    """What the decision needs to know of a request."""
    requester: str | None  # tenant; None: anonymous
    action: str  # "s3:GetObject"...
    bucket: str
    key: str | None = None
    source_ip: str | None = None
    prefix: str | None = None  # s3:prefix of a listing
    # further condition keys the request carries (lower case key -> its values): headers such as
    # s3:x-amz-acl, the request's tags (s3:requestobjecttag/<k>), the object's (s3:existingobjecttag/<k>)
    context: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def resource(self) -> str:
        return f"arn:aws:s3:::{self.bucket}" + (f"/{self.key}" if self.action in OBJECT_ACTIONS else "")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    explicit: bool = False  # denied by a Deny statement
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


@lru_cache(maxsize=4096)
def _pattern(glob: str) -> re.Pattern:
    """IAM's wildcards: ``*`` any run of characters, ``?`` one; nothing else is special."""
    return re.compile(fnmatch.translate(glob))


def wildcard_match(glob: str, value: str, case_sensitive: bool = True) -> bool:
    escaped = "".join("[[]" if c == "[" else c for c in glob)  # fnmatch's character classes are not IAM's
    if not case_sensitive:
        escaped, value = escaped.lower(), value.lower()
    return _pattern(escaped).match(value) is not None


def _principal_matches(stmt: Statement, requester: str | None) -> bool:
    return "*" in stmt.principals or (requester is not None and requester in stmt.principals)


def _context_values(req: Request, key: str) -> tuple[str, ...] | None:
    """A condition key's values in the request; None when it lacks the key."""
    value = {"s3:prefix": req.prefix, "aws:sourceip": req.source_ip}.get(key)
    if value is not None:
        return (value,)
    return next((values for k, values in req.context if k == key), None)


def _in_network(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for net in networks:
        try:
            if ip in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False


def condition_holds(operator: str, value: str | tuple[str, ...] | None, wanted: tuple[str, ...]) -> bool:
    """One condition operator on a context key's value (or values: any of them may match); a key
    the request lacks matches only the negated operators, and any ...IfExists one, as in IAM."""
    if_exists = operator.endswith("IfExists")
    operator = operator[:-len("IfExists")] if if_exists else operator
    negated = operator in ("StringNotEquals", "StringNotLike", "NotIpAddress")
    if value is None:
        return negated or if_exists
    if isinstance(value, tuple):
        hits = [condition_holds(operator, v, wanted) for v in value]
        return all(hits) if negated else any(hits)
    if operator in ("StringEquals", "StringNotEquals"):
        hit = value in wanted
    elif operator in ("StringLike", "StringNotLike"):
        hit = any(wildcard_match(w, value) for w in wanted)
    elif operator in ("IpAddress", "NotIpAddress"):
        hit = _in_network(value, wanted)
    else:  # unknown operators never get stored; fail closed all the same
        return False
    return not hit if negated else hit


def _statement_matches(stmt: Statement, req: Request) -> bool:
    return (_principal_matches(stmt, req.requester)
            and any(wildcard_match(a, req.action, case_sensitive=False) for a in stmt.actions)
            and any(wildcard_match(r, req.resource) for r in stmt.resources)
            and all(condition_holds(op, _context_values(req, key), values) for op, key, values in stmt.conditions))


def decide(req: Request, bucket_owner: str, bucket_acl: Acl | None = None,
           policy: tuple[Statement, ...] = (), object_acl: Acl | None = None,
           block: PublicAccessBlock = NO_BLOCK) -> Decision:
    """Allow or deny one request on a bucket (and key) of ``bucket_owner``."""
    owner = req.requester is not None and req.requester == bucket_owner
    matching = [s for s in policy if _statement_matches(s, req)]
    if any(s.effect == "Deny" for s in matching) and not (owner and req.action in OWNER_KEEPS):
        return Decision(False, explicit=True, reason="explicitly denied by the bucket policy")
    # an object another tenant owns (ObjectWriter) is read through its own ACL, the bucket owner's too
    foreign = req.action in OBJECT_ACL_ACTIONS and object_acl is not None and object_acl.owner != bucket_owner
    if owner and not foreign:
        return Decision(True, reason="bucket owner")
    restricted = block.restrict_public_buckets and policy_is_public(policy)
    if any(s.effect == "Allow" for s in matching) and not restricted:
        return Decision(True, reason="allowed by the bucket policy")
    groups = not block.ignore_public_acls
    if req.action in OBJECT_ACL_ACTIONS and object_acl is not None:
        if acl_grants(object_acl, req.requester, OBJECT_ACL_ACTIONS[req.action], groups):
            return Decision(True, reason="granted by the object's ACL")
    elif req.action in BUCKET_ACL_ACTIONS and bucket_acl is not None:
        if acl_grants(bucket_acl, req.requester, BUCKET_ACL_ACTIONS[req.action], groups):
            return Decision(True, reason="granted by the bucket's ACL")
    return Decision(False, reason="no grant or policy allows it")


def acl_grants(acl: Acl, requester: str | None, permission: str, groups: bool = True) -> bool:
    """Whether ``acl`` gives ``requester`` ``permission`` (FULL_CONTROL gives them all); without
    ``groups`` the grants to AllUsers and AuthenticatedUsers count for nothing (IgnorePublicAcls)."""
    for grant in acl.grants:
        if grant.permission not in (permission, FULL_CONTROL):
            continue
        if not groups and grant.grantee in GROUPS:
            continue
        if grant.grantee == ALL_USERS:
            return True
        if requester is not None and grant.grantee in (AUTHENTICATED_USERS, requester):
            return True
    return False


def policy_is_public(policy: tuple[Statement, ...]) -> bool:
    return any(s.is_public() for s in policy)


def bucket_is_public(policy: tuple[Statement, ...], acl: Acl | None, block: PublicAccessBlock = NO_BLOCK) -> bool:
    """GetBucketPolicyStatus's IsPublic: a public policy, or an ACL grant to a group, unless the
    public access block makes either count for nothing."""
    return ((policy_is_public(policy) and not block.restrict_public_buckets)
            or (acl is not None and acl.is_public() and not block.ignore_public_acls))
