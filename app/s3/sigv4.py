"""AWS Signature Version 4, server side: the Authorization header and presigned query strings.

The canonical request is rebuilt from the request exactly as it arrived: the raw path (S3 neither
normalises nor double-encodes it) and the raw query string, each name and value decoded and
re-encoded with AWS's rules. Streaming bodies are verified by app.s3.payload from the
AuthContext this returns.

One Signature Version 2 form is verified too: the presigned URL (``AWSAccessKeyId``,
``Signature``, ``Expires``), because boto3 and aws-cli presign with it by default in regions where
AWS still accepts it (us-east-1 among them). A SigV2 Authorization header is refused.
"""
from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Callable
from urllib.parse import quote, unquote, unquote_to_bytes

from app.s3.errors import (AccessDenied, AuthorizationHeaderMalformed, AuthorizationQueryParametersError,
                           FeatureNotImplemented, InvalidAccessKeyId, InvalidArgument, InvalidRequest,
                           MissingSecurityHeader, RequestExpired, RequestTimeTooSkewed, SignatureDoesNotMatch)

ALGORITHM = "AWS4-HMAC-SHA256"
SIGV4A = "AWS4-ECDSA-P256-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"
MAX_SKEW_S = 15 * 60
MAX_EXPIRES_S = 7 * 24 * 3600
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
PAYLOAD_MODES = frozenset({UNSIGNED_PAYLOAD, STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER,
                           STREAMING_UNSIGNED_TRAILER})
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SCOPE_DATE = re.compile(r"\d{8}")
_SIGNED_INT = re.compile(r"([+-]?)([0-9]+)")
_UNRESERVED = "-_.~"  # with A-Za-z0-9: the characters AWS leaves unencoded
_PRESIGN_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                   "X-Amz-SignedHeaders", "X-Amz-Signature")

Lookup = Callable[[str], "tuple[str, str] | None"]


@dataclass
class AuthContext:
    access_key: str
    tenant: str
    amz_date: str  # YYYYMMDDTHHMMSSZ
    scope: str  # date/region/s3/aws4_request
    signing_key: bytes
    seed_signature: str
    payload_hash: str  # x-amz-content-sha256; UNSIGNED-PAYLOAD for a presigned request
    presigned: bool
    signature_version: int = 4  # 2: a SigV2 presigned URL (no scope, no signing key)

    @property
    def region(self) -> str:
        return self.scope.split("/")[1] if self.scope else ""


def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    for part in (region, service, TERMINATOR):
        key = _hmac(key, part)
    return key


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def sign(key: bytes, string_to_sign: str) -> str:
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def uri_encode(raw: bytes) -> str:
    """AWS's encoding: A-Za-z0-9 and -_.~ as they are, every other byte as %XX (upper case)."""
    return quote(raw, safe=_UNRESERVED)


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """The raw query string as (name, value) pairs, decoded ('+' stays '+'); empty values kept."""
    pairs = []
    for part in raw_query.split("&") if raw_query else ():
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote_to_bytes(name).decode("utf-8", "replace"),
                      unquote_to_bytes(value).decode("utf-8", "replace")))
    return pairs


def canonical_query(raw_query: str, drop_signature: bool = False) -> str:
    """The canonical query string: each name and value re-encoded, sorted by name then value."""
    pairs = []
    for part in raw_query.split("&") if raw_query else ():
        if not part:
            continue
        name, _, value = part.partition("=")
        name_b = unquote_to_bytes(name)
        if drop_signature and name_b == b"X-Amz-Signature":
            continue
        pairs.append((uri_encode(name_b), uri_encode(unquote_to_bytes(value))))
    pairs.sort()
    return "&".join(f"{n}={v}" for n, v in pairs)


def _client_text(value: str) -> str:
    """A header value as the client held it: WSGI decodes header bytes as latin-1, but a client that
    sent UTF-8 signed the UTF-8 text (botocore sends latin-1 text as latin-1 bytes: kept as is)."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _header_value(headers, name: str) -> str:
    value = headers.get(name)
    return " ".join(_client_text(value).split()) if value is not None else ""


def canonical_request(method: str, raw_path: str, canonical_qs: str, headers, signed: list[str],
                      payload_hash: str) -> str:
    lines = [method.upper(), raw_path or "/", canonical_qs]
    lines.extend(f"{name}:{_header_value(headers, name)}" for name in signed)
    lines.extend(["", ";".join(signed), payload_hash])
    return "\n".join(lines)


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()])


# --- parsing -------------------------------------------------------------------------------------

@dataclass
class _Presented:
    access_key: str
    date: str
    region: str
    signed: list[str]
    signature: str
    amz_date: str
    expires: int | None  # presigned only


def _credential(value: str, error) -> tuple[str, str, str]:
    parts = value.split("/")
    if len(parts) != 5 or not parts[0]:
        raise error(f"the Credential is malformed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/"
                    f"aws4_request\", got {value!r}")
    access_key, date, region, service, terminator = parts
    if not _SCOPE_DATE.fullmatch(date):
        raise error(f"the Credential's date {date!r} is not YYYYMMDD")
    if not region:
        raise error("the Credential names no region")
    if service != SERVICE:
        raise error(f"the Credential's service is {service!r}; this endpoint is 's3'")
    if terminator != TERMINATOR:
        raise error(f"the Credential must end in aws4_request, not {terminator!r}")
    return access_key, date, region


def _signed_headers(value: str, error) -> list[str]:
    names = value.split(";")
    if not value or any(not n or n != n.strip().lower() for n in names):
        raise error(f"SignedHeaders must be lower-case header names separated by ';', got {value!r}")
    return names


def _from_header(authorization: str, headers) -> _Presented:
    error = AuthorizationHeaderMalformed
    _, _, rest = authorization.partition(" ")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if k not in fields]
    if missing:
        raise error(f"the authorization header is malformed; it lacks {', '.join(missing)}")
    access_key, date, region = _credential(fields["Credential"], error)
    amz_date = headers.get("x-amz-date")
    if amz_date is None:
        amz_date = _from_http_date(headers.get("date"))
    elif not _AMZ_DATE.fullmatch(amz_date.strip()):
        raise AccessDenied("AWS authentication requires a valid Date or x-amz-date header")
    return _Presented(access_key, date, region, _signed_headers(fields["SignedHeaders"], error),
                      fields["Signature"], amz_date.strip(), None)


def _from_http_date(value: str | None) -> str:
    try:
        parsed = parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError):
        parsed = None
    if parsed is None:
        raise AccessDenied("AWS authentication requires a valid Date or x-amz-date header")
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(parsed.timestamp()))


def _from_query(query: dict[str, str]) -> _Presented:
    error = AuthorizationQueryParametersError
    missing = [k for k in _PRESIGN_PARAMS if k not in query]
    if missing:
        raise error("Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
                    "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters; "
                    f"missing: {', '.join(missing)}")
    access_key, date, region = _credential(query["X-Amz-Credential"], error)
    amz_date = query["X-Amz-Date"]
    if not _AMZ_DATE.fullmatch(amz_date):
        raise error("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    expires = _expires(query["X-Amz-Expires"])
    return _Presented(access_key, date, region, _signed_headers(query["X-Amz-SignedHeaders"], error),
                      query["X-Amz-Signature"], amz_date, expires)


def _expires(raw: str) -> int:
    """X-Amz-Expires, refused with AWS's messages. 0 is valid and already expired (as on AWS)."""
    error = AuthorizationQueryParametersError
    match = _SIGNED_INT.fullmatch(raw)
    digits = match.group(2).lstrip("0") or "0" if match else ""
    if not match or len(digits) > 19:
        raise error("X-Amz-Expires should be a number")
    if match.group(1) == "-" and digits != "0":
        raise error("X-Amz-Expires must be non-negative")
    if int(digits) > MAX_EXPIRES_S:
        raise error(f"X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires "
                    f"must be less than {MAX_EXPIRES_S} seconds")
    return int(digits)


def _epoch(amz_date: str) -> float:
    try:
        return float(calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        raise AccessDenied(f"the request date {amz_date!r} is not a valid date") from None


def _payload_hash(headers, presigned: bool, query: dict[str, str]) -> str:
    if presigned:
        return query.get("X-Amz-Content-Sha256") or UNSIGNED_PAYLOAD
    value = headers.get("x-amz-content-sha256")
    if value is None:
        raise MissingSecurityHeader("Missing required header for this request: x-amz-content-sha256",
                                    MissingHeaderName="x-amz-content-sha256")
    value = value.strip()
    if value in PAYLOAD_MODES or _HEX64.fullmatch(value):
        return value
    if "ECDSA" in value:
        raise FeatureNotImplemented("SigV4a (AWS4-ECDSA-P256-SHA256) streaming payloads are not supported; "
                                    "sign with AWS4-HMAC-SHA256")
    raise InvalidArgument("x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, "
                          "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, STREAMING-UNSIGNED-PAYLOAD-TRAILER "
                          "or a valid sha256 value.", ArgumentName="x-amz-content-sha256")


def _check_signed_set(headers, signed: list[str], presigned: bool) -> None:
    names = set(signed)
    if "host" not in names:
        raise (AuthorizationQueryParametersError if presigned else AuthorizationHeaderMalformed)(
            "the host header must be signed")
    for name, _ in headers.items():
        lname = name.lower()
        if lname.startswith("x-amz-") and lname not in names:
            if presigned and lname == "x-amz-content-sha256":
                continue
            raise AccessDenied(f"There were headers present in the request which were not signed: {lname}",
                               HeadersNotSigned=lname)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _check_time(presented: _Presented, now: float) -> None:
    if presented.amz_date[:8] != presented.date:
        error = AuthorizationQueryParametersError if presented.expires is not None else AuthorizationHeaderMalformed
        raise error(f"the date in the credential scope ({presented.date}) does not match the request date "
                    f"({presented.amz_date[:8]})")
    signed_at = _epoch(presented.amz_date)
    if presented.expires is not None:
        if now > signed_at + presented.expires or presented.expires == 0:
            raise RequestExpired(**{"X-Amz-Expires": str(presented.expires),
                                    "Expires": _iso(signed_at + presented.expires), "ServerTime": _iso(now)})
        if signed_at - now > MAX_SKEW_S:
            raise AccessDenied("Request is not valid yet")
    elif abs(now - signed_at) > MAX_SKEW_S:
        raise RequestTimeTooSkewed(RequestTime=presented.amz_date, ServerTime=_iso(now),
                                   MaxAllowedSkewMilliseconds=str(MAX_SKEW_S * 1000))


# --- verification --------------------------------------------------------------------------------

def is_signed(headers, query: dict[str, str]) -> bool:
    """Whether a request carries any signature (an Authorization header or presigned parameters):
    one that does not is anonymous, and no authentication is attempted."""
    return bool((headers.get("authorization") or "").strip()) or any(
        name in query for name in ("X-Amz-Algorithm", "X-Amz-Signature", "X-Amz-Credential", "AWSAccessKeyId",
                                   "Signature"))


def authenticate(method: str, raw_path: str, raw_query: str, headers, lookup: Lookup,
                 now: float | None = None, virtual_bucket: str | None = None) -> AuthContext:
    """Verify a request's SigV4 signature; the caller's identity, or an S3Error.

    ``raw_path`` is the path as it came on the wire (gunicorn's RAW_URI without its query),
    ``raw_query`` the QUERY_STRING, ``headers`` any case-insensitive mapping with ``.get`` and
    ``.items``; ``lookup(access_key_id)`` gives ``(secret, tenant)`` or None (unknown, revoked).
    ``virtual_bucket``: the bucket the Host header names in virtual-hosted style (a SigV2
    presigned URL signs ``/bucket/key`` whichever style it is sent in).
    """
    now = time.time() if now is None else now
    query = dict(parse_query(raw_query))
    authorization = (headers.get("authorization") or "").strip()
    in_query = "X-Amz-Algorithm" in query or "X-Amz-Signature" in query or "X-Amz-Credential" in query
    if authorization and in_query:
        raise InvalidArgument("Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or "
                              "the Authorization header should be specified", ArgumentName="Authorization")
    if authorization:
        scheme = authorization.split(" ", 1)[0]
        if scheme == SIGV4A:
            raise FeatureNotImplemented("SigV4a (AWS4-ECDSA-P256-SHA256) is not supported; sign with "
                                        "AWS4-HMAC-SHA256")
        if scheme == "AWS":
            raise InvalidRequest("Signature Version 2 is not supported: use Signature Version 4 "
                                 "(AWS4-HMAC-SHA256)")
        if scheme != ALGORITHM:
            raise InvalidArgument(f"Unsupported Authorization Type {scheme!r}: use AWS4-HMAC-SHA256",
                                  ArgumentName="Authorization")
        presented = _from_header(authorization, headers)
    elif in_query:
        algorithm = query.get("X-Amz-Algorithm")
        if algorithm == SIGV4A:
            raise FeatureNotImplemented("SigV4a (AWS4-ECDSA-P256-SHA256) is not supported; sign with "
                                        "AWS4-HMAC-SHA256")
        if algorithm is not None and algorithm != ALGORITHM:
            raise AuthorizationQueryParametersError(f"X-Amz-Algorithm only supports \"{ALGORITHM}\"")
        presented = _from_query(query)
    elif "AWSAccessKeyId" in query or "Signature" in query:
        return _authenticate_v2_query(method, raw_path, raw_query, query, headers, lookup, now, virtual_bucket)
    else:
        raise AccessDenied("Access Denied: the request is not signed (use AWS Signature Version 4)")

    presigned = presented.expires is not None
    _check_time(presented, now)
    payload_hash = _payload_hash(headers, presigned, query)
    _check_signed_set(headers, presented.signed, presigned)
    found = lookup(presented.access_key)
    if found is None:
        raise InvalidAccessKeyId(AWSAccessKeyId=presented.access_key)
    secret, tenant = found
    scope = f"{presented.date}/{presented.region}/{SERVICE}/{TERMINATOR}"
    key = signing_key(secret, presented.date, presented.region)
    canonical = canonical_request(method, raw_path, canonical_query(raw_query, drop_signature=presigned),
                                  headers, presented.signed, payload_hash)
    to_sign = string_to_sign(presented.amz_date, scope, canonical)
    expected = sign(key, to_sign)
    given = presented.signature.strip().lower().encode("ascii", "replace")
    if not hmac.compare_digest(expected.encode("ascii"), given):
        raise SignatureDoesNotMatch(AWSAccessKeyId=presented.access_key, StringToSign=to_sign,
                                    CanonicalRequest=canonical)
    return AuthContext(access_key=presented.access_key, tenant=tenant, amz_date=presented.amz_date, scope=scope,
                       signing_key=key, seed_signature=expected, payload_hash=payload_hash, presigned=presigned)


# --- Signature Version 2, presigned URLs only --------------------------------------------------

# The sub-resources a SigV2 string to sign names (botocore's list, which AWS accepts).
V2_SUBRESOURCES = frozenset({
    "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber", "policy",
    "requestPayment", "torrent", "versioning", "versionId", "versions", "website", "uploads", "uploadId",
    "response-content-type", "response-content-language", "response-expires", "response-cache-control",
    "response-content-disposition", "response-content-encoding", "delete", "lifecycle", "tagging", "restore",
    "storageClass", "notification", "replication", "analytics", "metrics", "inventory", "select",
    "select-type", "object-lock"})


def _v2_resource(raw_path: str, raw_query: str, virtual_bucket: str | None) -> str:
    resource = (f"/{virtual_bucket}" if virtual_bucket else "") + (raw_path or "/")
    subresources = []
    for part in raw_query.split("&") if raw_query else ():
        name, sep, value = part.partition("=")
        if name in V2_SUBRESOURCES:
            subresources.append(f"{name}={unquote(value)}" if sep else name)
    if subresources:
        subresources.sort(key=lambda item: item.partition("=")[0])
        resource += "?" + "&".join(subresources)
    return resource


def _authenticate_v2_query(method: str, raw_path: str, raw_query: str, query: dict[str, str], headers,
                           lookup: Lookup, now: float, virtual_bucket: str | None) -> AuthContext:
    missing = [k for k in ("AWSAccessKeyId", "Signature", "Expires") if not query.get(k)]
    if missing:
        raise AccessDenied("Query-string authentication requires the Signature, Expires and AWSAccessKeyId "
                           f"parameters; missing: {', '.join(missing)}")
    match = _SIGNED_INT.fullmatch(query["Expires"])
    if match is None or len(match.group(2).lstrip("0")) > 12:  # beyond year 30000: not a date
        raise AccessDenied(f"Invalid date (should be seconds since epoch): {query['Expires']}")
    expires = int(match.group(0))
    if now > expires:
        raise RequestExpired(Expires=_iso(max(expires, 0)), ServerTime=_iso(now))
    # x-amz-* values may travel as headers or, presigned, as query parameters: all are signed
    amz: dict[str, list[str]] = {}
    for name, value in headers.items():
        if name.lower().startswith("x-amz-"):
            amz.setdefault(name.lower(), []).append(_client_text(value).strip())
    for name, value in parse_query(raw_query):
        if name.lower().startswith("x-amz-"):
            amz.setdefault(name.lower(), []).append(value.strip())

    def standard(name: str) -> str:
        value = headers.get(name)
        return (value if value is not None else query.get(name, "")).strip()

    lines = [method.upper(), standard("content-md5"), standard("content-type"), query["Expires"]]
    lines.extend(f"{name}:{','.join(amz[name])}" for name in sorted(amz))
    lines.append(_v2_resource(raw_path, raw_query, virtual_bucket))
    to_sign = "\n".join(lines)
    access_key = query["AWSAccessKeyId"]
    found = lookup(access_key)
    if found is None:
        raise InvalidAccessKeyId(AWSAccessKeyId=access_key)
    secret, tenant = found
    expected = base64.b64encode(hmac.new(secret.encode("utf-8"), to_sign.encode("utf-8"), hashlib.sha1).digest())
    if not hmac.compare_digest(expected, query["Signature"].strip().encode("ascii", "replace")):
        raise SignatureDoesNotMatch(AWSAccessKeyId=access_key, StringToSign=to_sign)
    signed_at = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return AuthContext(access_key=access_key, tenant=tenant, amz_date=signed_at, scope="", signing_key=b"",
                       seed_signature=expected.decode("ascii"), payload_hash=UNSIGNED_PAYLOAD, presigned=True,
                       signature_version=2)
