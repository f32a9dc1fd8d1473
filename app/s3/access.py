"""ACLs and bucket policies on the wire: the permission check every S3 call passes before its
handler (``authorize``), canned ACLs and ``x-amz-grant-*`` headers, AccessControlPolicy XML,
policy JSON, and the handlers of Get/PutBucketAcl, Get/PutObjectAcl, Put/Get/DeleteBucketPolicy,
GetBucketPolicyStatus, Put/Get/DeletePublicAccessBlock and Put/Get/DeleteBucketOwnershipControls. pipeline.access.permissions decides; this module only reads and answers.

A bucket's ACL is its ``acl`` configuration (``Acl.to_mongo()``), its policy its ``policy``
configuration: ``{"text": the JSON as given, "statements": [...]}``. An object's ACL is the
``acl`` of its name document, whose ``owner`` is the object's (the writer, unless the bucket's
``ownership`` configuration gives it to the bucket owner). The ``public_access_block`` and
``ownership`` configurations are stored beside them. A policy names another tenant by its canonical id (the tenant's
name), as ``{"AWS": "<tenant>"}``, ``{"AWS": "arn:aws:iam::<tenant>:root"}`` or
``{"CanonicalUser": "<tenant>"}``.
"""
from __future__ import annotations

import json
import re

from flask import Response

from app.s3.errors import (AccessControlListNotSupported, AccessDenied, InvalidArgument,
                           InvalidBucketAclWithObjectOwnership, InvalidRequest, MalformedACLError, MalformedPolicy,
                           MalformedXML, NoSuchBucketPolicy, NoSuchPublicAccessBlockConfiguration,
                           OwnershipControlsNotFoundError, UnresolvableGrantByEmailAddress)
from app.s3.request import S3Call, empty_answer, xml_answer
from app.s3.xmlio import _Doc, _children, _child_text, _local, _parse
from pipeline.access import permissions
from pipeline.errors import StoreError
from pipeline.access.keys import valid_tenant
from pipeline.access.permissions import (ALL_USERS, AUTHENTICATED_USERS, CANNED_ACLS, OWNERSHIP_RULES, PERMISSIONS, Acl,
                                         Grant, PublicAccessBlock, Request, Statement)
from urllib.parse import unquote

ACL_CONFIG = "acl"
POLICY_CONFIG = "policy"
PUBLIC_ACCESS_BLOCK_CONFIG = "public_access_block"  # PublicAccessBlock.to_mongo()
OWNERSHIP_CONFIG = "ownership"  # {"rule": one of OWNERSHIP_RULES}
MAX_CONFIG_XML = 64 * 1024
MAX_ACL_XML = 64 * 1024
MAX_POLICY_BYTES = 20 * 1024  # S3's limit on a bucket policy
GRANT_HEADERS = {"x-amz-grant-read": "READ", "x-amz-grant-write": "WRITE", "x-amz-grant-read-acp": "READ_ACP",
                 "x-amz-grant-write-acp": "WRITE_ACP", "x-amz-grant-full-control": "FULL_CONTROL"}
XSI = "http://www.w3.org/2001/XMLSchema-instance"

# DeleteObjects is decided key by key, as s3:DeleteObject of each (its handler asks): the call
# itself only needs the bucket to exist
DELETE_OBJECTS = "s3:DeleteObjects"
# the action of each call: (level, method, sub-resource) -> IAM action; level is service/bucket/object
ACTIONS = {
    ("bucket", "HEAD", None): "s3:ListBucket", ("bucket", "GET", None): "s3:ListBucket",
    ("bucket", "DELETE", None): "s3:DeleteBucket", ("bucket", "GET", "location"): "s3:GetBucketLocation",
    ("bucket", "GET", "versioning"): "s3:GetBucketVersioning", ("bucket", "PUT", "versioning"): "s3:PutBucketVersioning", ("bucket", "GET", "versions"): "s3:ListBucketVersions",
    ("bucket", "GET", "uploads"): "s3:ListBucketMultipartUploads", ("bucket", "POST", "delete"): DELETE_OBJECTS,
    ("bucket", "GET", "acl"): "s3:GetBucketAcl", ("bucket", "PUT", "acl"): "s3:PutBucketAcl",
    ("bucket", "GET", "policy"): "s3:GetBucketPolicy", ("bucket", "PUT", "policy"): "s3:PutBucketPolicy",
    ("bucket", "DELETE", "policy"): "s3:DeleteBucketPolicy",
    ("bucket", "GET", "policyStatus"): "s3:GetBucketPolicyStatus",
    ("bucket", "GET", "publicAccessBlock"): "s3:GetBucketPublicAccessBlock",
    ("bucket", "PUT", "publicAccessBlock"): "s3:PutBucketPublicAccessBlock",
    ("bucket", "DELETE", "publicAccessBlock"): "s3:PutBucketPublicAccessBlock",
    ("bucket", "GET", "ownershipControls"): "s3:GetBucketOwnershipControls",
    ("bucket", "PUT", "ownershipControls"): "s3:PutBucketOwnershipControls",
    ("bucket", "DELETE", "ownershipControls"): "s3:PutBucketOwnershipControls",
    ("bucket", "GET", "cors"): "s3:GetBucketCORS", ("bucket", "PUT", "cors"): "s3:PutBucketCORS",
    ("bucket", "DELETE", "cors"): "s3:PutBucketCORS",
    ("bucket", "GET", "tagging"): "s3:GetBucketTagging", ("bucket", "PUT", "tagging"): "s3:PutBucketTagging",
    ("bucket", "DELETE", "tagging"): "s3:PutBucketTagging",
    ("bucket", "GET", "lifecycle"): "s3:GetLifecycleConfiguration",
    ("bucket", "PUT", "lifecycle"): "s3:PutLifecycleConfiguration",
    ("bucket", "DELETE", "lifecycle"): "s3:PutLifecycleConfiguration",
    ("object", "PUT", None): "s3:PutObject", ("object", "GET", None): "s3:GetObject",
    ("object", "HEAD", None): "s3:GetObject", ("object", "DELETE", None): "s3:DeleteObject",
    ("object", "POST", "uploads"): "s3:PutObject", ("object", "PUT", "uploadId"): "s3:PutObject",
    ("object", "POST", "uploadId"): "s3:PutObject", ("object", "GET", "uploadId"): "s3:ListMultipartUploadParts",
    ("object", "DELETE", "uploadId"): "s3:AbortMultipartUpload",
    ("object", "GET", "acl"): "s3:GetObjectAcl", ("object", "PUT", "acl"): "s3:PutObjectAcl",
    ("object", "GET", "tagging"): "s3:GetObjectTagging", ("object", "PUT", "tagging"): "s3:PutObjectTagging",
    ("object", "DELETE", "tagging"): "s3:DeleteObjectTagging",
    ("object", "GET", "attributes"): "s3:GetObjectAttributes",
    ("bucket", "GET", "object-lock"): "s3:GetBucketObjectLockConfiguration",
    ("bucket", "PUT", "object-lock"): "s3:PutBucketObjectLockConfiguration",
    ("object", "GET", "retention"): "s3:GetObjectRetention", ("object", "PUT", "retention"): "s3:PutObjectRetention",
    ("object", "GET", "legal-hold"): "s3:GetObjectLegalHold", ("object", "PUT", "legal-hold"): "s3:PutObjectLegalHold",
}


def action_of(call: S3Call, sub: str | None) -> str:
    level = "bucket" if call.key is None else "object"
    # a call with no entry here (a sub-resource not implemented) is its owner's alone
    return ACTIONS.get((level, call.method, sub), "s3:OwnerOnly")


def source_ip(call: S3Call) -> str | None:
    return call.remote_addr


def bucket_policy(call: S3Call, bucket: str) -> tuple[Statement, ...]:
    config = call.names.applied_bucket_config(bucket, POLICY_CONFIG)
    return tuple(Statement.from_mongo(s) for s in (config or {}).get("statements") or ())


def public_access_block(call: S3Call, bucket: str) -> PublicAccessBlock:
    return PublicAccessBlock.from_mongo(call.names.applied_bucket_config(bucket, PUBLIC_ACCESS_BLOCK_CONFIG))


def ownership_rule(call: S3Call, bucket: str) -> str | None:
    return (call.names.applied_bucket_config(bucket, OWNERSHIP_CONFIG) or {}).get("rule")


# request headers a policy condition may name (s3:<header>)
_CONDITION_HEADERS = ("x-amz-acl", "x-amz-metadata-directive", "x-amz-grant-read", "x-amz-grant-write",
                      "x-amz-grant-read-acp", "x-amz-grant-write-acp", "x-amz-grant-full-control")


def _request_context(call: S3Call) -> list[tuple[str, tuple[str, ...]]]:
    """The condition keys the call's own headers give (s3:x-amz-acl, s3:RequestObjectTag/<k>...)."""
    context = [("s3:" + h, (call.header(h),)) for h in _CONDITION_HEADERS if call.header(h) is not None]
    if call.header("Referer") is not None:
        context.append(("aws:referer", (call.header("Referer"),)))
    source = call.header("x-amz-copy-source")
    if source is not None:  # "bucket/key", decoded, without a version
        context.append(("s3:x-amz-copy-source", (unquote(source.split("?", 1)[0]).lstrip("/"),)))
    tagging = call.header("x-amz-tagging")
    if tagging is not None:
        from urllib.parse import parse_qsl
        tags = parse_qsl(tagging, keep_blank_values=True)
        context += [("s3:requestobjecttag/" + k.lower(), (v,)) for k, v in tags]
        context.append(("s3:requestobjecttagkeys", tuple(k for k, _ in tags)))
    return context


def _names_existing_tags(policy: tuple[Statement, ...]) -> bool:
    return any(k.startswith("s3:existingobjecttag/") for s in policy for _, k, _ in s.conditions)


_CALLER = object()


def require(call: S3Call, action: str, bucket: str, key: str | None = None, requester=_CALLER) -> str:
    """Refuse (AccessDenied) unless the caller (or ``requester``: a tenant, None for anonymous)
    may do ``action`` on ``bucket`` (and ``key``); the bucket owner's tenant otherwise.
    NoSuchBucket when there is no such bucket, whoever asks."""
    owner = call.names.find_bucket(bucket).tenant
    requester = call.requester if requester is _CALLER else requester
    bucket_acl = Acl.from_mongo(call.names.applied_bucket_config(bucket, ACL_CONFIG), owner)
    policy = bucket_policy(call, bucket)
    block = public_access_block(call, bucket)
    own_call = (bucket, key) == (call.bucket, call.key)
    context = _request_context(call) if own_call else []
    object_acl, missing = None, False
    tags_needed = key is not None and action in permissions.OBJECT_ACTIONS and _names_existing_tags(policy)
    if key is not None and (action in permissions.OBJECT_ACL_ACTIONS or tags_needed):
        try:
            # a request that names a version is decided by that version's ACL, as S3
            version = call.query.get("versionId") or None if own_call else None
            info = call.names.head(owner, bucket, key, version)
            object_acl = Acl.from_mongo(info.acl, owner)
            context += [("s3:existingobjecttag/" + k.lower(), (v,)) for k, v in info.tags]
        except StoreError:
            missing = True
    request = Request(requester, action, bucket, key, source_ip(call),
                      call.query.get("prefix") if action in ("s3:ListBucket", "s3:ListBucketVersions") else None,
                      tuple(context))
    decision = permissions.decide(request, owner, bucket_acl, policy, object_acl, block)
    if not decision and missing and not decision.explicit:
        # a missing key: NoSuchKey (from the handler) to whoever may list the bucket, else AccessDenied, as S3
        listing = Request(requester, "s3:ListBucket", bucket, None, source_ip(call), key)  # s3:prefix: the key
        decision = permissions.decide(listing, owner, bucket_acl, policy, None, block)
    if not decision:
        raise AccessDenied("Access Denied")
    return owner


def authorize(call: S3Call, sub: str | None, creates_bucket: bool) -> None:
    """The one permission check of a call, before its handler and before its body is read; the
    call then acts on the bucket as its owner."""
    if call.bucket is None or creates_bucket:
        if call.requester is None:
            raise AccessDenied("Access Denied: the request is not signed (use AWS Signature Version 4)")
        return
    action = action_of(call, sub)
    if action == DELETE_OBJECTS:
        call.bucket_owner = call.names.find_bucket(call.bucket).tenant
    else:
        call.bucket_owner = require(call, action, call.bucket, call.key)
    expected = call.header("x-amz-expected-bucket-owner")
    if expected is not None and expected != call.bucket_owner:
        raise AccessDenied("Access Denied: the bucket is not owned by the expected owner")


# --- ACLs from a request ------------------------------------------------------------------------

_GRANTEE = re.compile(r'\s*(id|uri|emailAddress)\s*=\s*"?([^",]*)"?\s*(?:,|$)', re.IGNORECASE)


def _grantee(kind: str, value: str) -> str:
    kind = kind.lower()
    if kind == "id" and value:
        try:
            return valid_tenant(value)
        except StoreError:
            raise InvalidArgument("Invalid id", ArgumentName="CanonicalUser/ID", ArgumentValue=value) from None
    if kind == "uri" and value in (ALL_USERS, AUTHENTICATED_USERS):
        return value
    if kind == "emailaddress":  # no tenant has an e-mail address here
        raise UnresolvableGrantByEmailAddress(EmailAddress=value)
    raise InvalidArgument("Invalid id or uri", ArgumentName=kind, ArgumentValue=value)


def header_grants(call: S3Call) -> list[Grant]:
    grants: list[Grant] = []
    for header, permission in GRANT_HEADERS.items():
        raw = call.header(header)
        if raw is None:
            continue
        pos = 0
        while pos < len(raw):
            match = _GRANTEE.match(raw, pos)
            if match is None or match.end() == pos:
                raise InvalidArgument(f"Invalid header {header}", ArgumentName=header, ArgumentValue=raw)
            grants.append(Grant(_grantee(match.group(1), match.group(2)), permission))
            pos = match.end()
    return grants


def request_acl(call: S3Call, owner: str) -> Acl | None:
    """The ACL an ``x-amz-acl`` or ``x-amz-grant-*`` headers give; None without either. Refused
    when the bucket's public access block blocks public ACLs, or its ownership disables ACLs."""
    acl = _headers_acl(call, owner)
    if call.bucket_owner is not None and call.bucket is not None:
        if acl is not None and not permissions.acl_allowed_by_ownership(
                ownership_rule(call, call.bucket), call.header("x-amz-acl")):
            raise AccessControlListNotSupported()
        if permissions.refuses_acl(public_access_block(call, call.bucket), acl):
            raise AccessDenied("Access Denied: the bucket's public access block blocks public ACLs")
    return acl


def _headers_acl(call: S3Call, owner: str) -> Acl | None:
    canned = call.header("x-amz-acl")
    grants = header_grants(call)
    if canned is not None and grants:
        raise InvalidRequest("Specifying both Canned ACLs and Header Grants is not allowed")
    if canned is not None:
        if canned not in CANNED_ACLS:
            raise InvalidArgument(None, ArgumentName="x-amz-acl", ArgumentValue=canned)
        return permissions.canned(canned, owner, call.bucket_owner or owner)
    if grants:
        return Acl(owner, tuple(grants))
    return None


def request_acl_doc(call: S3Call, owner: str) -> dict | None:
    """What a PUT, a copy or a multipart creation stores as the object's ACL (None: the bucket
    owner's private ACL); its owner is the object's, as the bucket's ownership controls say."""
    rule = ownership_rule(call, call.bucket) if call.bucket_owner is not None else None
    writer = permissions.object_owner(rule, call.requester, owner, call.header("x-amz-acl"))
    acl = request_acl(call, writer)
    if acl is None and writer != owner:
        acl = permissions.private(writer)
    return acl.to_mongo() if acl is not None else None


def parse_acl_xml(body: bytes, owner: str) -> Acl:
    try:
        root = _parse(body, MAX_ACL_XML, "AccessControlPolicy")
    except MalformedXML:
        raise MalformedACLError() from None
    lists = _children(root, "AccessControlList")
    if len(lists) != 1:
        raise MalformedACLError()
    grants = []
    for grant in _children(lists[0], "Grant"):
        grantees = _children(grant, "Grantee")
        permission = (_child_text(grant, "Permission") or "").strip()
        if len(grantees) != 1 or permission not in PERMISSIONS:
            raise MalformedACLError()
        grantee = grantees[0]
        kind = grantee.get(f"{{{XSI}}}type") or ""
        if kind == "CanonicalUser" or _child_text(grantee, "ID") is not None:
            grants.append(Grant(_grantee("id", (_child_text(grantee, "ID") or "").strip()), permission))
        elif kind == "Group" or _child_text(grantee, "URI") is not None:
            grants.append(Grant(_grantee("uri", (_child_text(grantee, "URI") or "").strip()), permission))
        elif kind == "AmazonCustomerByEmail":
            _grantee("emailAddress", _child_text(grantee, "EmailAddress") or "")
        else:
            raise MalformedACLError()
    for child in root:
        if _local(child.tag) not in ("Owner", "AccessControlList"):
            raise MalformedACLError()
    return Acl(owner, tuple(grants))


def put_acl_of(call: S3Call, owner: str) -> Acl:
    """The ACL a PutBucketAcl / PutObjectAcl sets: from headers, or else from its body."""
    if not permissions.acl_allowed_by_ownership(ownership_rule(call, call.bucket), None, sets_acl=True):
        raise AccessControlListNotSupported()
    acl = request_acl(call, owner)
    body = call.small_body(MAX_ACL_XML)
    if acl is not None:
        if body.strip():
            raise InvalidRequest("Specifying both an ACL in the request body and ACL headers is not allowed")
        return acl
    if not body.strip():
        raise MalformedACLError()
    acl = parse_acl_xml(body, owner)
    if permissions.refuses_acl(public_access_block(call, call.bucket), acl):
        raise AccessDenied("Access Denied: the bucket's public access block blocks public ACLs")
    return acl


def acl_xml(acl: Acl) -> bytes:
    doc = _Doc("AccessControlPolicy").open("Owner").el("ID", acl.owner).el("DisplayName", acl.owner).close("Owner")
    doc.open("AccessControlList")
    for grant in acl.listed():
        doc.open("Grant")
        if grant.grantee in (ALL_USERS, AUTHENTICATED_USERS):
            doc._parts.append(f'<Grantee xmlns:xsi="{XSI}" xsi:type="Group">')
            doc.el("URI", grant.grantee)
        else:
            doc._parts.append(f'<Grantee xmlns:xsi="{XSI}" xsi:type="CanonicalUser">')
            doc.el("ID", grant.grantee).el("DisplayName", grant.grantee)
        doc.close("Grantee").el("Permission", grant.permission).close("Grant")
    return doc.close("AccessControlList").bytes()


def bucket_acl(call: S3Call) -> Acl:
    return Acl.from_mongo(call.names.bucket_config(call.tenant, call.bucket, ACL_CONFIG), call.tenant)


def get_bucket_acl(call: S3Call) -> Response:
    return xml_answer(acl_xml(bucket_acl(call)))


def put_bucket_acl(call: S3Call) -> Response:
    acl = put_acl_of(call, call.tenant)
    call.names.put_bucket_config(call.tenant, call.bucket, ACL_CONFIG, acl.to_mongo())
    return empty_answer(200)


def _check_version(call: S3Call) -> str | None:
    from app.s3.objects import check_version  # app.s3.objects imports this module

    return check_version(call)


def get_object_acl(call: S3Call) -> Response:
    info = call.names.head(call.tenant, call.bucket, call.key, _check_version(call))
    headers = {"x-amz-version-id": info.version_id} if info.version_id else None
    return xml_answer(acl_xml(Acl.from_mongo(info.acl, call.tenant)), headers=headers)


def put_object_acl(call: S3Call) -> Response:
    version = _check_version(call)
    current = call.names.head(call.tenant, call.bucket, call.key, version)  # NoSuchKey / NoSuchVersion first
    acl = put_acl_of(call, Acl.from_mongo(current.acl, call.tenant).owner)  # the object's owner stays
    info = call.names.set_acl(call.tenant, call.bucket, call.key, acl.to_mongo(), version)
    if info.version_id:
        return empty_answer(200, {"x-amz-version-id": info.version_id})
    return empty_answer(200)


# --- bucket policies ----------------------------------------------------------------------------

_STATEMENT_FIELDS = {"Sid", "Effect", "Principal", "Action", "Resource", "Condition"}
_TENANT_ARN = re.compile(r"^arn:aws:iam::([^:]+):(?:root|user/.+)$")


def _strings(value, message: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise MalformedPolicy(message)
    return values


def _principals(value) -> tuple[str, ...]:
    if value == "*":
        return ("*",)
    if not isinstance(value, dict) or not value:
        raise MalformedPolicy("Invalid principal in policy")
    found = []
    for kind, names in value.items():
        if kind not in ("AWS", "CanonicalUser"):
            raise MalformedPolicy("Invalid principal in policy")
        for name in _strings(names, "Invalid principal in policy"):
            if name == "*":
                found.append("*")
                continue
            arn = _TENANT_ARN.match(name)
            tenant = arn.group(1) if arn and kind == "AWS" else name
            if name.startswith("arn:") and not arn:
                raise MalformedPolicy("Invalid principal in policy")
            try:
                valid_tenant(tenant)
            except StoreError:
                raise MalformedPolicy("Invalid principal in policy") from None
            found.append(tenant)
    return tuple(found)


def _actions(value) -> tuple[str, ...]:
    actions = _strings(value, "Policy has invalid action")
    known = ["s3:" + a.lower() for a in permissions.POLICY_ACTIONS]
    for action in actions:
        low = action.lower()
        names_one = any(permissions.wildcard_match(low, k) for k in known) or "*" in low or "?" in low
        if low != "*" and (not low.startswith("s3:") or not names_one):
            raise MalformedPolicy("Policy has invalid action")
    return tuple(a.lower() for a in actions)


def _resources(value, bucket: str, actions: tuple[str, ...]) -> tuple[str, ...]:
    resources = _strings(value, "Policy has invalid resource")
    for resource in resources:
        if not resource.startswith("arn:aws:s3:::"):
            raise MalformedPolicy("Policy has invalid resource")
        named = resource[len("arn:aws:s3:::"):].split("/", 1)[0]
        if not permissions.wildcard_match(named, bucket):
            raise MalformedPolicy("Policy has invalid resource")
    on_object = any("/" in r for r in resources)
    on_bucket = any("/" not in r or r.endswith(":::*") for r in resources)
    for action in actions:
        applies = any(permissions.wildcard_match(action, a.lower(), case_sensitive=False) and
                      ((a in permissions.OBJECT_ACTIONS and on_object) or
                       (a not in permissions.OBJECT_ACTIONS and on_bucket))
                      for a in ("s3:" + n for n in permissions.POLICY_ACTIONS))
        if not applies:
            raise MalformedPolicy("Action does not apply to any resource(s) in statement")
    return tuple(resources)


def _conditions(value) -> tuple:
    if not isinstance(value, dict):
        raise MalformedPolicy("Invalid Condition")
    found = []
    for operator, block in value.items():
        if operator not in permissions.CONDITION_OPERATORS:
            raise MalformedPolicy(f"Invalid Condition type : {operator}")
        if not isinstance(block, dict) or not block:
            raise MalformedPolicy("Invalid Condition")
        for key, wanted in block.items():
            if not permissions.valid_condition_key(key.lower()):
                raise MalformedPolicy("Policy has an invalid condition key")
            values = [wanted] if isinstance(wanted, str) else wanted
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise MalformedPolicy("Invalid Condition")
            found.append((operator, key.lower(), tuple(values)))
    return tuple(found)


def parse_policy(text: bytes, bucket: str) -> tuple[Statement, ...]:
    """The statements of a bucket policy, or MalformedPolicy with S3's message."""
    stripped = text.lstrip()
    if not stripped.startswith(b"{"):
        raise MalformedPolicy("Policies must be valid JSON and the first byte must be '{'")
    try:
        doc = json.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise MalformedPolicy("This policy contains invalid Json") from None
    unknown = set(doc) - {"Version", "Id", "Statement"}
    if unknown:
        raise MalformedPolicy(f"Unknown field {sorted(unknown)[0]}")
    if "Version" in doc and doc["Version"] not in ("2012-10-17", "2008-10-17"):
        raise MalformedPolicy(f"Document is invalid: Invalid Version {doc['Version']}")
    if "Statement" not in doc:
        raise MalformedPolicy("Missing required field Statement")
    raw = doc["Statement"]
    raw = [raw] if isinstance(raw, dict) else raw
    if not isinstance(raw, list) or not raw or not all(isinstance(s, dict) for s in raw):
        raise MalformedPolicy("Missing required field Statement")
    statements = []
    for s in raw:
        extra = set(s) - _STATEMENT_FIELDS
        if extra:
            raise MalformedPolicy(f"Unknown field {sorted(extra)[0]}")  # NotAction, NotPrincipal...: not supported
        for required in ("Effect", "Principal", "Action", "Resource"):
            if required not in s:
                raise MalformedPolicy(f"Missing required field {required}")
        if s["Effect"] not in ("Allow", "Deny"):
            raise MalformedPolicy(f"Invalid effect: {s['Effect']}")
        actions = _actions(s["Action"])
        statements.append(Statement(s["Effect"], _principals(s["Principal"]), actions,
                                    _resources(s["Resource"], bucket, actions),
                                    _conditions(s.get("Condition", {}))))
    return tuple(statements)


def put_bucket_policy(call: S3Call) -> Response:
    text = call.small_body(MAX_POLICY_BYTES + 1)
    if len(text) > MAX_POLICY_BYTES:
        raise MalformedPolicy("Policy exceeds the maximum allowed document size.")
    statements = parse_policy(text, call.bucket)
    if permissions.refuses_policy(public_access_block(call, call.bucket), statements):
        raise AccessDenied("Access Denied: the bucket's public access block blocks public policies")
    call.names.put_bucket_config(call.tenant, call.bucket, POLICY_CONFIG, {
        "text": text.decode("utf-8"), "statements": [s.to_mongo() for s in statements]})
    return empty_answer(204)


def get_bucket_policy(call: S3Call) -> Response:
    config = call.names.bucket_config(call.tenant, call.bucket, POLICY_CONFIG)
    if not config:
        raise NoSuchBucketPolicy(BucketName=call.bucket)
    return Response(config["text"].encode("utf-8"), status=200, mimetype="application/json")


def delete_bucket_policy(call: S3Call) -> Response:
    call.names.delete_bucket_config(call.tenant, call.bucket, POLICY_CONFIG)
    return empty_answer(204)


def get_bucket_policy_status(call: S3Call) -> Response:
    config = call.names.bucket_config(call.tenant, call.bucket, POLICY_CONFIG) or {}
    policy = tuple(Statement.from_mongo(s) for s in config.get("statements") or ())
    public = permissions.bucket_is_public(policy, bucket_acl(call), public_access_block(call, call.bucket))
    return xml_answer(_Doc("PolicyStatus").el("IsPublic", public).bytes())


# --- public access block and object ownership ----------------------------------------------------

_BLOCK_FIELDS = (("BlockPublicAcls", "block_public_acls"), ("IgnorePublicAcls", "ignore_public_acls"),
                 ("BlockPublicPolicy", "block_public_policy"), ("RestrictPublicBuckets", "restrict_public_buckets"))


def put_public_access_block(call: S3Call) -> Response:
    root = _parse(call.small_body(MAX_CONFIG_XML), MAX_CONFIG_XML, "PublicAccessBlockConfiguration")
    values = {}
    for element, field in _BLOCK_FIELDS:
        text = (_child_text(root, element) or "false").strip().lower()
        if text not in ("true", "false"):
            raise MalformedXML()
        values[field] = text == "true"
    call.names.put_bucket_config(call.tenant, call.bucket, PUBLIC_ACCESS_BLOCK_CONFIG,
                                 PublicAccessBlock(**values).to_mongo())
    return empty_answer(200)


def get_public_access_block(call: S3Call) -> Response:
    config = call.names.bucket_config(call.tenant, call.bucket, PUBLIC_ACCESS_BLOCK_CONFIG)
    if config is None:
        raise NoSuchPublicAccessBlockConfiguration(BucketName=call.bucket)
    block = PublicAccessBlock.from_mongo(config)
    doc = _Doc("PublicAccessBlockConfiguration")
    for element, field in _BLOCK_FIELDS:
        doc.el(element, getattr(block, field))
    return xml_answer(doc.bytes())


def delete_public_access_block(call: S3Call) -> Response:
    call.names.delete_bucket_config(call.tenant, call.bucket, PUBLIC_ACCESS_BLOCK_CONFIG)
    return empty_answer(204)


def _valid_rule(rule: str | None) -> str:
    if rule not in OWNERSHIP_RULES:
        raise MalformedXML()
    return rule


def _check_ownership(rule: str, acl: Acl | None) -> None:
    """BucketOwnerEnforced needs a bucket ACL that grants only the owner (AWS's check)."""
    if acl is not None and not permissions.bucket_acl_fits_ownership(rule, acl):
        raise InvalidBucketAclWithObjectOwnership()


def create_bucket_ownership(call: S3Call, acl: Acl | None) -> str | None:
    """The ``x-amz-object-ownership`` of a CreateBucket, checked against its ACL (before it exists)."""
    rule = call.header("x-amz-object-ownership")
    if rule is None:
        return None
    if rule not in OWNERSHIP_RULES:
        raise InvalidArgument("Invalid x-amz-object-ownership header", ArgumentName="x-amz-object-ownership",
                              ArgumentValue=rule)
    _check_ownership(rule, acl)
    return rule


def store_ownership(call: S3Call, bucket: str, rule: str | None) -> None:
    if rule is not None:
        call.names.put_bucket_config(call.tenant, bucket, OWNERSHIP_CONFIG, {"rule": rule})


def put_bucket_ownership_controls(call: S3Call) -> Response:
    root = _parse(call.small_body(MAX_CONFIG_XML), MAX_CONFIG_XML, "OwnershipControls")
    rules = _children(root, "Rule")
    if len(rules) != 1:
        raise MalformedXML()
    rule = _valid_rule((_child_text(rules[0], "ObjectOwnership") or "").strip())
    _check_ownership(rule, bucket_acl(call))
    store_ownership(call, call.bucket, rule)
    return empty_answer(200)


def get_bucket_ownership_controls(call: S3Call) -> Response:
    rule = (call.names.bucket_config(call.tenant, call.bucket, OWNERSHIP_CONFIG) or {}).get("rule")
    if rule is None:
        raise OwnershipControlsNotFoundError(BucketName=call.bucket)
    doc = _Doc("OwnershipControls").open("Rule").el("ObjectOwnership", rule).close("Rule")
    return xml_answer(doc.bytes())


def delete_bucket_ownership_controls(call: S3Call) -> Response:
    call.names.delete_bucket_config(call.tenant, call.bucket, OWNERSHIP_CONFIG)
    return empty_answer(204)
