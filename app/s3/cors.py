"""Bucket CORS: PutBucketCors, GetBucketCors, DeleteBucketCors, the preflight ``OPTIONS`` and the
headers of actual cross-origin requests.

A bucket's rules are its ``cors`` configuration: ``{"rules": [{"id", "origins", "methods",
"headers", "expose", "maxAge"}, ...]}``. The first rule that matches a request's origin, method
and (for a preflight) requested headers answers it, as AWS evaluates them. A preflight is not
signed (a browser sends it on its own) and is answered before authentication; an actual request
gets the headers whoever sends it, error answers included.
"""
from __future__ import annotations

import logging

from flask import Response

from app.s3.errors import AccessForbidden, BadRequest, InvalidRequest, MalformedXML, NoSuchCORSConfiguration
from app.s3.request import S3Call, empty_answer, xml_answer
from app.s3.xmlio import _Doc, _children, _local, _parse

log = logging.getLogger(__name__)

CONFIG = "cors"
MAX_CORS_XML = 64 * 1024
MAX_RULES = 100
MAX_ID_CHARS = 255
METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
VARY = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"
_RULE_ELEMENTS = {"ID", "AllowedOrigin", "AllowedMethod", "AllowedHeader", "ExposeHeader", "MaxAgeSeconds"}


# --- the configuration ---------------------------------------------------------------------------

def _text(element) -> str:
    return (element.text or "").strip()


def _rule(element) -> dict:
    for child in element:
        if _local(child.tag) not in _RULE_ELEMENTS:
            raise MalformedXML(f"Unexpected element {_local(child.tag)!r} in CORSRule.")
    origins = [_text(e) for e in _children(element, "AllowedOrigin")]
    methods = [_text(e) for e in _children(element, "AllowedMethod")]
    headers = [_text(e) for e in _children(element, "AllowedHeader")]
    expose = [_text(e) for e in _children(element, "ExposeHeader")]
    ids = [e.text or "" for e in _children(element, "ID")]
    ages = [_text(e) for e in _children(element, "MaxAgeSeconds")]
    if not origins or not methods or len(ids) > 1 or len(ages) > 1:
        raise MalformedXML("Each CORSRule needs AllowedOrigin and AllowedMethod, and at most one ID and "
                           "MaxAgeSeconds.")
    for method in methods:
        if method not in METHODS:
            raise InvalidRequest(f"Found unsupported HTTP method in CORS config. Unsupported method is {method}")
    for origin in origins:
        if not origin or origin.count("*") > 1:
            raise InvalidRequest(f'AllowedOrigin "{origin}" can not have more than one wildcard.')
    for header in headers:
        if not header or header.count("*") > 1:
            raise InvalidRequest(f'AllowedHeader "{header}" can not have more than one wildcard.')
    if any(not h for h in expose):
        raise MalformedXML("An ExposeHeader is empty.")
    if ids and len(ids[0]) > MAX_ID_CHARS:
        raise InvalidRequest(f"The ID of a CORSRule is at most {MAX_ID_CHARS} characters.")
    max_age = None
    if ages:
        if not ages[0].lstrip("-").isdigit():
            raise MalformedXML("MaxAgeSeconds must be an integer.")
        max_age = int(ages[0])
    return {"id": ids[0] if ids else None, "origins": origins, "methods": methods, "headers": headers,
            "expose": expose, "maxAge": max_age}


def parse_cors(body: bytes) -> list[dict]:
    root = _parse(body, MAX_CORS_XML, "CORSConfiguration")
    for child in root:
        if _local(child.tag) != "CORSRule":
            raise MalformedXML(f"Unexpected element {_local(child.tag)!r} in CORSConfiguration.")
    rules = [_rule(e) for e in _children(root, "CORSRule")]
    if not rules:
        raise MalformedXML("A CORSConfiguration needs at least one CORSRule.")
    if len(rules) > MAX_RULES:
        raise MalformedXML(f"A CORSConfiguration holds at most {MAX_RULES} rules.")
    return rules


def cors_xml(rules: list[dict]) -> bytes:
    doc = _Doc("CORSConfiguration")
    for rule in rules:
        doc.open("CORSRule").el("ID", rule.get("id"))
        for name, values in (("AllowedHeader", rule["headers"]), ("AllowedMethod", rule["methods"]),
                             ("AllowedOrigin", rule["origins"]), ("ExposeHeader", rule["expose"])):
            for value in values:
                doc.el(name, value)
        doc.el("MaxAgeSeconds", rule.get("maxAge")).close("CORSRule")
    return doc.bytes()


def put_bucket_cors(call: S3Call) -> Response:
    call.names.bucket(call.tenant, call.bucket)  # NoSuchBucket / AccessDenied before the body
    rules = parse_cors(call.small_body(MAX_CORS_XML))  # Content-MD5 or x-amz-checksum-*: verified
    call.names.put_bucket_config(call.tenant, call.bucket, CONFIG, {"rules": rules})
    return empty_answer(200)


def get_bucket_cors(call: S3Call) -> Response:
    config = call.names.bucket_config(call.tenant, call.bucket, CONFIG)
    if not config:
        raise NoSuchCORSConfiguration(BucketName=call.bucket)
    return xml_answer(cors_xml(config["rules"]))


def delete_bucket_cors(call: S3Call) -> Response:
    call.names.delete_bucket_config(call.tenant, call.bucket, CONFIG)
    return empty_answer(204)


# --- evaluation ------------------------------------------------------------------------------------

def wildcard_match(pattern: str, value: str, fold: bool = False) -> bool:
    """``pattern`` with at most one ``*`` (any run of characters) against ``value``."""
    if fold:
        pattern, value = pattern.lower(), value.lower()
    head, star, tail = pattern.partition("*")
    if not star:
        return pattern == value
    return len(value) >= len(head) + len(tail) and value.startswith(head) and value.endswith(tail)


def matching_rule(rules: list[dict], origin: str, method: str, headers: list[str] = ()) -> dict | None:
    """The first rule allowing this origin, method and every one of these request headers."""
    for rule in rules:
        if method not in rule["methods"]:
            continue
        if not any(wildcard_match(o, origin) for o in rule["origins"]):
            continue
        if all(any(wildcard_match(h, wanted, fold=True) for h in rule["headers"]) for wanted in headers):
            return rule
    return None


def _rule_headers(rule: dict, origin: str) -> dict:
    wildcard = "*" in rule["origins"] and not any(wildcard_match(o, origin) for o in rule["origins"] if o != "*")
    headers = {"Access-Control-Allow-Origin": "*" if wildcard else origin,
               "Access-Control-Allow-Methods": ", ".join(rule["methods"]), "Vary": VARY}
    if not wildcard:
        headers["Access-Control-Allow-Credentials"] = "true"
    if rule["expose"]:
        headers["Access-Control-Expose-Headers"] = ", ".join(rule["expose"])
    if rule.get("maxAge") is not None:
        headers["Access-Control-Max-Age"] = str(rule["maxAge"])
    return headers


def preflight(call: S3Call) -> Response:
    """``OPTIONS /bucket[/key]``: 200 with the first matching rule's headers, else 403."""
    origin = call.header("Origin")
    if not origin:
        raise BadRequest("Insufficient information. Origin request header needed.")
    method = call.header("Access-Control-Request-Method")
    if method not in METHODS:
        raise BadRequest(f"Invalid Access-Control-Request-Method: {method if method is not None else 'null'}")
    if call.bucket is None:
        raise AccessForbidden("CORSResponse: Bucket not found", Method=method, ResourceType="BUCKET")
    config = call.names.applied_bucket_config(call.bucket, CONFIG)  # None too when there is no such bucket
    if not config:
        raise AccessForbidden("CORSResponse: CORS is not enabled for this bucket.", Method=method,
                              ResourceType="BUCKET")
    requested = [h.strip() for h in (call.header("Access-Control-Request-Headers") or "").split(",") if h.strip()]
    rule = matching_rule(config["rules"], origin, method, requested)
    if rule is None:
        raise AccessForbidden(Method=method, ResourceType="OBJECT" if call.key else "BUCKET")
    headers = _rule_headers(rule, origin)
    if requested:
        headers["Access-Control-Allow-Headers"] = ", ".join(requested)
    return empty_answer(200, headers)


def add_response_headers(response: Response, names, bucket: str | None, method: str, origin: str,
                         requested_method: str | None = None) -> None:
    """An actual cross-origin request: the CORS headers of the first rule allowing its origin and
    method (the method an ``Access-Control-Request-Method`` header names, when the request has
    one, as S3 evaluates it). Nothing is added when none does, or the bucket's configuration
    cannot be read."""
    if not bucket:
        return
    method = requested_method.strip() if requested_method and requested_method.strip() else method
    try:
        config = names.applied_bucket_config(bucket, CONFIG)
    except Exception as exc:  # the answer stands without CORS headers; a browser then refuses it
        log.warning("could not read the CORS configuration of %r: %r", bucket, exc)
        return
    rule = matching_rule(config["rules"], origin, method) if config else None
    if rule is not None:
        for name, value in _rule_headers(rule, origin).items():
            response.headers[name] = value
