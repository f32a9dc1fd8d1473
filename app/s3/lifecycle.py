"""Bucket lifecycle: PutBucketLifecycleConfiguration, GetBucketLifecycleConfiguration,
DeleteBucketLifecycle (``?lifecycle``).

This module reads and writes the XML; ``pipeline.namespace.lifecycle`` checks the rules (with AWS's codes and
messages) and applies them in beat. A PUT must carry ``Content-MD5`` or an ``x-amz-checksum-*``
header or trailer, as AWS requires (both are verified); the configuration replaces any earlier one.
"""
from __future__ import annotations

from flask import Response

from app.s3 import checksums
from app.s3.errors import InvalidArgument, InvalidRequest, MalformedXML, NoSuchLifecycleConfiguration
from app.s3.request import S3Call, empty_answer, xml_answer
from app.s3.xmlio import _Doc, _local, _parse
from pipeline.namespace.lifecycle import (CONFIG, Filter, LifecycleInvalid, Rule, Transition, parse_rules,
                                rules_from_mongo, rules_to_mongo)
from pipeline.timefmt import iso8601

MAX_LIFECYCLE_XML = 1 << 20  # 1,000 rules of a few hundred bytes each, with room


_S3_CODE = {LifecycleInvalid.MALFORMED: MalformedXML, LifecycleInvalid.ARGUMENT: InvalidArgument,
            LifecycleInvalid.REQUEST: InvalidRequest}

# element -> (children that may appear once, children that may repeat); a name in neither is MalformedXML
_SHAPES: dict[str, tuple[set[str], set[str]]] = {
    "LifecycleConfiguration": (set(), {"Rule"}),
    "Rule": ({"ID", "Status", "Prefix", "Filter", "Expiration", "NoncurrentVersionExpiration",
              "AbortIncompleteMultipartUpload"}, {"Transition", "NoncurrentVersionTransition"}),
    "Filter": ({"Prefix", "Tag", "ObjectSizeGreaterThan", "ObjectSizeLessThan", "And"}, set()),
    "And": ({"Prefix", "ObjectSizeGreaterThan", "ObjectSizeLessThan"}, {"Tag"}),
    "Tag": ({"Key", "Value"}, set()),
    "Expiration": ({"Days", "Date", "ExpiredObjectDeleteMarker"}, set()),
    "NoncurrentVersionExpiration": ({"NoncurrentDays", "NewerNoncurrentVersions"}, set()),
    "AbortIncompleteMultipartUpload": ({"DaysAfterInitiation"}, set()),
    "Transition": ({"Days", "Date", "StorageClass"}, set()),
    "NoncurrentVersionTransition": ({"NoncurrentDays", "StorageClass", "NewerNoncurrentVersions"}, set()),
}
# repeated elements as S3's API names the list
_LISTS = {"Rule": "Rules", "Tag": "Tags", "Transition": "Transitions",
          "NoncurrentVersionTransition": "NoncurrentVersionTransitions"}


def _given(element) -> dict | str:
    """An element in S3's API shape: a leaf's text, or a dict of its children (repeated ones as lists)."""
    name = _local(element.tag)
    shape = _SHAPES.get(name)
    if shape is None:
        if len(element):
            raise MalformedXML()
        return element.text or ""
    once, many = shape
    out: dict = {}
    for child in element:
        child_name = _local(child.tag)
        if child_name in many:
            out.setdefault(_LISTS[child_name], []).append(_given(child))
        elif child_name in once and child_name not in out:
            out[child_name] = _given(child)
        else:
            raise MalformedXML()
    return out


def parse_lifecycle(body: bytes) -> list[Rule]:
    root = _parse(body, MAX_LIFECYCLE_XML, "LifecycleConfiguration")
    given = _given(root)
    try:
        return parse_rules(given.get("Rules") or [])
    except LifecycleInvalid as exc:
        raise _S3_CODE[exc.kind](exc.message) from None


def _date(ts: float) -> str:
    return iso8601(ts)


def _filter_xml(doc: _Doc, f: Filter) -> None:
    if f.form == "legacy":
        doc.el("Prefix", f.prefix)
        return
    doc.open("Filter")
    if f.form == "prefix":
        doc.el("Prefix", f.prefix)
    elif f.form == "tag":
        doc.open("Tag").el("Key", f.tags[0][0]).el("Value", f.tags[0][1]).close("Tag")
    elif f.form == "greater":
        doc.el("ObjectSizeGreaterThan", f.size_greater_than)
    elif f.form == "less":
        doc.el("ObjectSizeLessThan", f.size_less_than)
    elif f.form == "and":
        doc.open("And").el("Prefix", f.prefix or None)
        for key, value in f.tags:
            doc.open("Tag").el("Key", key).el("Value", value).close("Tag")
        doc.el("ObjectSizeGreaterThan", f.size_greater_than).el("ObjectSizeLessThan", f.size_less_than)
        doc.close("And")
    doc.close("Filter")


def _transition_xml(doc: _Doc, t: Transition, noncurrent: bool) -> None:
    element = "NoncurrentVersionTransition" if noncurrent else "Transition"
    doc.open(element)
    if noncurrent:
        doc.el("NoncurrentDays", t.days).el("NewerNoncurrentVersions", t.newer_noncurrent_versions)
    else:
        doc.el("Date", _date(t.date) if t.date is not None else None).el("Days", t.days)
    doc.el("StorageClass", t.storage_class).close(element)


def lifecycle_xml(rules: list[Rule]) -> bytes:
    doc = _Doc("LifecycleConfiguration")
    for r in rules:
        doc.open("Rule").el("ID", r.id)
        _filter_xml(doc, r.filter)
        doc.el("Status", "Enabled" if r.enabled else "Disabled")
        if r.expiration_days is not None or r.expiration_date is not None or r.expired_object_delete_marker is not None:
            doc.open("Expiration").el("Days", r.expiration_days)
            doc.el("Date", _date(r.expiration_date) if r.expiration_date is not None else None)
            doc.el("ExpiredObjectDeleteMarker", r.expired_object_delete_marker).close("Expiration")
        for t in r.transitions:
            _transition_xml(doc, t, noncurrent=False)
        for t in r.noncurrent_transitions:
            _transition_xml(doc, t, noncurrent=True)
        if r.noncurrent_days is not None:
            doc.open("NoncurrentVersionExpiration").el("NoncurrentDays", r.noncurrent_days)
            doc.el("NewerNoncurrentVersions", r.newer_noncurrent_versions).close("NoncurrentVersionExpiration")
        if r.abort_days is not None:
            doc.open("AbortIncompleteMultipartUpload").el("DaysAfterInitiation", r.abort_days)
            doc.close("AbortIncompleteMultipartUpload")
        doc.close("Rule")
    return doc.bytes()


def _require_integrity_header(call: S3Call) -> None:
    """AWS refuses this call without Content-MD5 or a checksum (boto3 sends an x-amz-checksum-*)."""
    if call.header("Content-MD5") is None and checksums.requested(call.headers) is None:
        raise InvalidRequest("Missing required header for this request: Content-MD5")


def put_bucket_lifecycle(call: S3Call) -> Response:
    call.names.bucket(call.tenant, call.bucket)  # NoSuchBucket / AccessDenied before the body
    _require_integrity_header(call)
    rules = parse_lifecycle(call.small_body(MAX_LIFECYCLE_XML))  # Content-MD5 or x-amz-checksum-*: verified
    call.names.put_bucket_config(call.tenant, call.bucket, CONFIG, rules_to_mongo(rules))
    # the store keeps no transition minimum: S3's default, which it answers when none was asked
    return empty_answer(200, {"x-amz-transition-default-minimum-object-size": "all_storage_classes_128K"})


def get_bucket_lifecycle(call: S3Call) -> Response:
    rules = rules_from_mongo(call.names.bucket_config(call.tenant, call.bucket, CONFIG))
    if not rules:
        raise NoSuchLifecycleConfiguration(BucketName=call.bucket)
    return xml_answer(lifecycle_xml(rules),
                      headers={"x-amz-transition-default-minimum-object-size": "all_storage_classes_128K"})


def delete_bucket_lifecycle(call: S3Call) -> Response:
    call.names.delete_bucket_config(call.tenant, call.bucket, CONFIG)
    return empty_answer(204)
