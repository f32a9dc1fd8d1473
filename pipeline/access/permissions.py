"""Who may do what: the one decision of every S3 request, from the bucket's ACL and policy and the
object's ACL. Pure: no Flask, no MongoDB; the S3 front end parses and stores, this module decides.

Identities are tenants: a tenant's canonical id is its name; ``None`` is an anonymous (unsigned)
requester. Objects belong to their bucket's owner, whoever wrote them.

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

POLICY_ACTIONS = ("GetObject", "PutObject", "DeleteObject", "GetObjectAcl", "PutObjectAcl", "GetObjectAttributes",
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

CONDITION_OPERATORS = ("StringEquals", "StringNotEquals", "StringLike", "StringNotLike", "IpAddress",
                       "NotIpAddress")
CONDITION_KEYS = ("s3:prefix", "aws:sourceip")


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


def _context_value(req: Request, key: str) -> str | None:
    return {"s3:prefix": req.prefix, "aws:sourceip": req.source_ip}.get(key)


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


def condition_holds(operator: str, value: str | None, wanted: tuple[str, ...]) -> bool:
    """One condition operator on one context value; a value the request lacks matches only the
    negated operators, as in IAM."""
    negated = operator in ("StringNotEquals", "StringNotLike", "NotIpAddress")
    if value is None:
        return negated
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
            and all(condition_holds(op, _context_value(req, key), values) for op, key, values in stmt.conditions))


def decide(req: Request, bucket_owner: str, bucket_acl: Acl | None = None,
           policy: tuple[Statement, ...] = (), object_acl: Acl | None = None) -> Decision:
    """Allow or deny one request on a bucket (and key) of ``bucket_owner``."""
    owner = req.requester is not None and req.requester == bucket_owner
    matching = [s for s in policy if _statement_matches(s, req)]
    if any(s.effect == "Deny" for s in matching) and not (owner and req.action in OWNER_KEEPS):
        return Decision(False, explicit=True, reason="explicitly denied by the bucket policy")
    if owner:
        return Decision(True, reason="bucket owner")
    if any(s.effect == "Allow" for s in matching):
        return Decision(True, reason="allowed by the bucket policy")
    if req.action in OBJECT_ACL_ACTIONS and object_acl is not None:
        if acl_grants(object_acl, req.requester, OBJECT_ACL_ACTIONS[req.action]):
            return Decision(True, reason="granted by the object's ACL")
    elif req.action in BUCKET_ACL_ACTIONS and bucket_acl is not None:
        if acl_grants(bucket_acl, req.requester, BUCKET_ACL_ACTIONS[req.action]):
            return Decision(True, reason="granted by the bucket's ACL")
    return Decision(False, reason="no grant or policy allows it")


def acl_grants(acl: Acl, requester: str | None, permission: str) -> bool:
    """Whether ``acl`` gives ``requester`` ``permission`` (FULL_CONTROL gives them all)."""
    for grant in acl.grants:
        if grant.permission not in (permission, FULL_CONTROL):
            continue
        if grant.grantee == ALL_USERS:
            return True
        if requester is not None and grant.grantee in (AUTHENTICATED_USERS, requester):
            return True
    return False


def policy_is_public(policy: tuple[Statement, ...]) -> bool:
    return any(s.is_public() for s in policy)
