"""Browser POST uploads: ``POST /bucket`` with a multipart/form-data body (an HTML form).

The form carries its own authority: a base64 JSON ``policy`` (an ``expiration`` and
``conditions``) signed with the uploader's credential, SigV4 (``x-amz-algorithm``,
``x-amz-credential``, ``x-amz-date``, ``x-amz-signature``: the hex HMAC of the base64 policy under
the SigV4 signing key) or SigV2 (``AWSAccessKeyId``, ``signature``: the base64 HMAC-SHA1, what
boto3's ``generate_presigned_post`` sends by default). The request itself is not signed, so it is
answered before SigV4 authentication.

A form with neither a policy nor a signature is anonymous: no conditions apply, and it succeeds
only where anyone may write (a bucket whose ACL or policy grants anonymous s3:PutObject), as in
AWS. A form with a policy must carry its signature and access key (InvalidArgument, 400).

Every field but ``file``, ``policy``, the signature, ``x-amz-checksum-*`` (a value verified
against the bytes, which can only refuse them) and ``x-ignore-*`` must be named by a
condition; each condition must hold (exact ``{"field": "v"}`` / ``["eq", "$field", "v"]``,
``["starts-with", "$field", "prefix"]``, ``["content-length-range", min, max]``). Field names are
case-insensitive. ``${filename}`` in ``key`` becomes the file's name before the conditions are
checked. The file must be the last field (fields after it are ignored); its bytes stream into the
store as a PutObject's do, cut off as soon as they pass the length range. ``tagging`` (a Tagging
XML document) sets the object's tags; an ``x-amz-checksum-<algorithm>`` field is checked against
the bytes (BadDigest) and kept as a PutObject's checksum header is.
"""
from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from typing import Iterable, Iterator
from urllib.parse import urlencode, urlsplit, urlunsplit

from flask import Response, current_app
from werkzeug.http import parse_options_header

from app.multipart import ClientGone, FilePart
from app.s3.errors import (AccessDenied, EntityTooLarge, EntityTooSmall, InvalidAccessKeyId, InvalidArgument,
                           InvalidPolicyDocument, MalformedPOSTRequest, PreconditionFailed, SignatureDoesNotMatch)
from app.s3 import checksums
from app.s3.access import require
from app.s3.objects import object_location
from app.s3.request import STORED_HEADERS, S3Call, empty_answer, xml_answer
from app.s3.sigv4 import ALGORITHM, SERVICE, TERMINATOR, sign, signing_key
from app.s3.tagging import MAX_OBJECT_TAGS, parse_tagging
from app.s3.xmlio import _Doc, quote_etag
from pipeline.errors import MalformedUpload
from pipeline.namespace.objects import ObjectAttributes
from pipeline.access.permissions import CANNED_ACLS, canned

META_PREFIX = "x-amz-meta-"
IGNORED_PREFIX = "x-ignore-"
# fields no condition needs to name: the file, the policy and what signs it
UNCONDITIONED = frozenset({"file", "policy", "x-amz-signature", "signature", "awsaccesskeyid"})
# the fields that make a form signed (SigV4, SigV2; a policy alone asks for a SigV2 signature)
SIGV4_FIELDS = ("x-amz-signature", "x-amz-credential", "x-amz-algorithm")
SIGV2_FIELDS = ("signature", "awsaccesskeyid", "policy")
SUCCESS_STATUSES = {"200": 200, "201": 201, "204": 204}
_EXPIRATION = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?Z")
_SCOPE_DATE = re.compile(r"\d{8}")


# --- the policy ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Condition:
    op: str  # "eq", "starts-with" or "content-length-range"
    field: str  # lower case, without "$" ("" for content-length-range)
    value: str | tuple[int, int]
    text: str  # as the policy wrote it, for error messages

    def holds(self, fields: dict[str, str]) -> bool:
        actual = fields.get(self.field, "")
        return actual == self.value if self.op == "eq" else actual.startswith(self.value)


@dataclass(frozen=True)
class Policy:
    expiration: float
    conditions: list[Condition]

    @property
    def length_range(self) -> tuple[int, int] | None:
        ranges = [c.value for c in self.conditions if c.op == "content-length-range"]
        if not ranges:
            return None
        return max(low for low, _ in ranges), min(high for _, high in ranges)


def _bad_policy(what: str) -> InvalidPolicyDocument:
    return InvalidPolicyDocument(f"Invalid Policy: {what}")


def _field_name(value) -> str:
    if not isinstance(value, str) or not value.startswith("$") or len(value) < 2:
        raise _bad_policy(f"Invalid Condition: the field must be named as \"$name\", not {value!r}.")
    return value[1:].lower()


def _length(value) -> int:
    if isinstance(value, bool):
        raise _bad_policy("Invalid content-length-range.")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise _bad_policy("Invalid content-length-range.")


def _condition(item) -> list[Condition]:
    text = json.dumps(item)
    if isinstance(item, dict):
        if not item or not all(isinstance(k, str) and isinstance(v, str) for k, v in item.items()):
            raise _bad_policy(f"Invalid Condition: {text}")
        return [Condition("eq", k.lower(), v, json.dumps({k: v})) for k, v in item.items()]
    if not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], str):
        raise _bad_policy(f"Invalid Condition: {text}")
    op = item[0].lower()
    if op == "content-length-range":
        low, high = _length(item[1]), _length(item[2])
        if low > high:
            raise _bad_policy("Invalid content-length-range.")
        return [Condition(op, "", (low, high), text)]
    if op not in ("eq", "starts-with") or not isinstance(item[2], str):
        raise _bad_policy(f"Invalid Condition: {text}")
    return [Condition(op, _field_name(item[1]), item[2], text)]


def parse_policy(encoded: str) -> Policy:
    """The policy of a form: base64 of a JSON object with ``expiration`` and ``conditions``."""
    try:
        doc = json.loads(base64.b64decode(encoded.encode("ascii"), validate=True).decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeError):
        raise _bad_policy("Invalid JSON.") from None
    if not isinstance(doc, dict):
        raise _bad_policy("Invalid JSON.")
    expiration = doc.get("expiration")
    if expiration is None:
        raise _bad_policy("Missing expiration.")
    match = _EXPIRATION.fullmatch(expiration) if isinstance(expiration, str) else None
    if match is None:
        raise _bad_policy("Invalid expiration.")
    try:
        expires = calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S")) + float(match.group(2) or 0)
    except ValueError:
        raise _bad_policy("Invalid expiration.") from None
    conditions = doc.get("conditions")
    if not isinstance(conditions, list):
        raise _bad_policy("Missing conditions.")
    return Policy(expires, [c for item in conditions for c in _condition(item)])


def check_policy(policy: Policy, fields: dict[str, str], now: float) -> None:
    """AccessDenied unless the policy is alive, every condition holds and names every field."""
    if now > policy.expiration:
        raise AccessDenied("Invalid according to Policy: Policy expired.")
    for condition in policy.conditions:
        if condition.op != "content-length-range" and not condition.holds(fields):
            raise AccessDenied(f"Invalid according to Policy: Policy Condition failed: {condition.text}")
    named = {c.field for c in policy.conditions}
    extra = sorted(name for name in fields if name not in named and name not in UNCONDITIONED
                   and name != "bucket" and not name.startswith((IGNORED_PREFIX, checksums.HEADER_PREFIX)))
    if extra:
        raise AccessDenied(f"Invalid according to Policy: Extra input fields: {', '.join(extra)}")


# --- the form's signature -----------------------------------------------------------------------------

def _required(fields: dict[str, str], name: str) -> str:
    value = fields.get(name)
    if not value:
        raise InvalidArgument(f"Bucket POST must contain a field named '{name}'.  If it is specified, please "
                              "check the order of the fields.", ArgumentName=name, ArgumentValue="")
    return value


def authenticate_form(fields: dict[str, str], lookup) -> str | None:
    """The tenant whose credential signed the form's policy; None for an anonymous form (no policy
    and no signing field at all)."""
    if any(name in fields for name in SIGV4_FIELDS):
        _required(fields, "x-amz-signature")
        algorithm = _required(fields, "x-amz-algorithm")
        if algorithm != ALGORITHM:
            raise InvalidArgument(f"Only {ALGORITHM} is supported for x-amz-algorithm",
                                  ArgumentName="x-amz-algorithm", ArgumentValue=algorithm)
        credential = _required(fields, "x-amz-credential")
        _required(fields, "x-amz-date")
        parts = credential.split("/")
        if len(parts) != 5 or not parts[0] or not _SCOPE_DATE.fullmatch(parts[1]) or not parts[2] \
                or parts[3] != SERVICE or parts[4] != TERMINATOR:
            raise InvalidArgument("x-amz-credential must be <access key>/YYYYMMDD/<region>/s3/aws4_request",
                                  ArgumentName="x-amz-credential", ArgumentValue=credential)
        access_key, date, region = parts[0], parts[1], parts[2]
        policy = _required(fields, "policy")
        found = lookup(access_key)
        if found is None:
            raise InvalidAccessKeyId(AWSAccessKeyId=access_key)
        expected = sign(signing_key(found[0], date, region), policy)
        given = fields["x-amz-signature"].strip().lower()
    elif any(name in fields for name in SIGV2_FIELDS):
        _required(fields, "signature")
        access_key = _required(fields, "awsaccesskeyid")
        policy = _required(fields, "policy")
        found = lookup(access_key)
        if found is None:
            raise InvalidAccessKeyId(AWSAccessKeyId=access_key)
        expected = base64.b64encode(hmac.new(found[0].encode("utf-8"), policy.encode("utf-8"),
                                             hashlib.sha1).digest()).decode("ascii")
        given = fields["signature"].strip()
    else:  # anonymous: what it may write, the bucket's ACL and policy decide
        return None
    if not hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace")):
        raise SignatureDoesNotMatch(AWSAccessKeyId=access_key, StringToSign=policy)
    return found[1]


# --- the request ----------------------------------------------------------------------------------

def read_form(call: S3Call) -> tuple[dict[str, str], FilePart]:
    """The fields before the file (lower-case names) and the file part, ready to stream."""
    mimetype, _ = parse_options_header(call.header("Content-Type") or "")
    if mimetype != "multipart/form-data":
        raise PreconditionFailed("Bucket POST must be of the enclosure-type multipart/form-data",
                                 Condition="Bucket POST must be of the enclosure-type multipart/form-data")
    raw: list[tuple[str, bytes]] = []
    try:
        part = FilePart(call.stream, call.header("Content-Type"), fields=raw)
    except ClientGone:
        raise
    except MalformedUpload as exc:
        if "no 'file' field" in exc.message:
            raise InvalidArgument("POST requires exactly one file upload per request.", ArgumentName="file",
                                  ArgumentValue="0") from None
        raise MalformedPOSTRequest() from None
    fields: dict[str, str] = {}
    for name, value in raw:
        lname = name.lower()
        if lname in fields:
            raise InvalidArgument(f"The form field {name!r} is given more than once", ArgumentName=name)
        try:
            fields[lname] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPOSTRequest(f"The form field {name!r} is not UTF-8.") from None
    return fields, part


def _sized(pieces: Iterable, length_range: tuple[int, int] | None,
           checksum: tuple[str, str] | None = None) -> Iterator:
    """The file's bytes, refused as soon as they pass the policy's maximum, or at their end if
    they fall short of its minimum or do not match the form's checksum (either way nothing is
    recorded)."""
    size = 0
    running = checksums.Checksum(checksum[0]) if checksum else None
    for piece in pieces:
        size += len(piece)
        if length_range is not None and size > length_range[1]:
            raise EntityTooLarge("Your proposed upload exceeds the maximum allowed size",
                                 MaxSizeAllowed=str(length_range[1]))
        if running is not None:
            running.update(piece)
        yield piece
    if length_range is not None and size < length_range[0]:
        raise EntityTooSmall("Your proposed upload is smaller than the minimum allowed size",
                             ProposedSize=str(size), MinSizeAllowed=str(length_range[0]))
    if running is not None:
        checksums.verify(checksum[0], checksum[1], running.digest())


def form_checksum(fields: dict[str, str]) -> tuple[str, str] | None:
    """(algorithm, base64 value) of the form's one ``x-amz-checksum-<algorithm>`` field, checked to
    be a value of that algorithm (InvalidRequest) before any byte is read."""
    found = checksums.value_header(fields)
    if found is not None:
        checksums.decode_value(*found)
    return found


def form_tags(fields: dict[str, str]) -> list[list[str]] | None:
    """The tags of the ``tagging`` field (a Tagging XML document), validated as PutObjectTagging's."""
    document = fields.get("tagging")
    if not document:
        return None
    return [list(t) for t in parse_tagging(document.encode("utf-8"), MAX_OBJECT_TAGS)] or None


def _attributes(fields: dict[str, str]) -> ObjectAttributes:
    meta = {name[len(META_PREFIX):]: value for name, value in fields.items()
            if name.startswith(META_PREFIX) and len(name) > len(META_PREFIX)}
    headers = {name: fields[name.lower()] for name in STORED_HEADERS if fields.get(name.lower())}
    return ObjectAttributes(content_type=fields.get("content-type") or None, metadata=meta, headers=headers)


def _redirect_target(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.netloc else None


def post_response_xml(location: str, bucket: str, key: str, etag: str) -> bytes:
    """The 201 answer's document: S3 writes it without the S3 namespace."""
    return (_Doc("PostResponse", namespace=None).el("Location", location).el("Bucket", bucket).el("Key", key)
            .el("ETag", quote_etag(etag)).bytes())


def post_object(call: S3Call) -> Response:
    fields, part = read_form(call)
    tenant = authenticate_form(fields, current_app.extensions["minis3.credentials"].lookup)
    policy = parse_policy(fields["policy"]) if tenant is not None else None
    key = _required(fields, "key")
    if "${filename}" in key:
        filename = (part.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
        key = key.replace("${filename}", filename)
    if policy is not None:
        check_policy(policy, {**fields, "key": key, "bucket": call.bucket}, time.time())
    owner = require(call, "s3:PutObject", call.bucket, key, requester=tenant)  # before the bytes
    attrs = _attributes(fields)
    if fields.get("acl"):
        if fields["acl"] not in CANNED_ACLS:
            raise InvalidArgument(None, ArgumentName="acl", ArgumentValue=fields["acl"])
        attrs.acl = canned(fields["acl"], owner).to_mongo()
    attrs.tags = form_tags(fields)
    checksum = form_checksum(fields)
    if checksum is not None:
        attrs.checksum = {"algorithm": checksum[0], "value": checksum[1].strip()}
    pieces = _sized(part, policy.length_range if policy is not None else None, checksum)
    info, f = call.names.put(owner, call.bucket, key, pieces, attrs, request_id=call.request_id)
    call.enqueue(f.id, call.request_id, small=f.chunk_count <= 1)
    location = object_location(call, key)
    headers = {"ETag": quote_etag(info.etag), "Location": location}
    redirect = _redirect_target(fields.get("success_action_redirect") or fields.get("redirect"))
    if redirect is not None:
        parts = urlsplit(redirect)
        added = urlencode({"bucket": call.bucket, "key": key, "etag": quote_etag(info.etag)})
        headers["Location"] = urlunsplit(parts._replace(query=f"{parts.query}&{added}" if parts.query else added))
        return empty_answer(303, headers)
    status = SUCCESS_STATUSES.get(fields.get("success_action_status", ""), 204)
    if status == 201:
        return xml_answer(post_response_xml(location, call.bucket, key, info.etag), 201, headers)
    return empty_answer(status, headers)
