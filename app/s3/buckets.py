"""Bucket operations: CreateBucket, HeadBucket, DeleteBucket, ListBuckets, GetBucketLocation,
Get/PutBucketVersioning, ListObjects (v1, v2), ListObjectVersions."""
from __future__ import annotations

import base64
import binascii

from flask import Response

from app.s3.access import ACL_CONFIG, create_bucket_ownership, request_acl, store_ownership
from app.s3.errors import InvalidArgument
from app.s3.request import S3Call, empty_answer, xml_answer
from app.s3.xmlio import (MAX_CREATE_BUCKET_XML, BucketEntry, ObjectEntry, check_encoding_type,
                          list_buckets_xml, list_objects_v1_xml, list_objects_v2_xml, list_versions_xml,
                          location_xml, parse_create_bucket, parse_versioning, versioning_xml)
from pipeline.metadata.mongo import prefix_end
from pipeline.namespace.names import valid_bucket_name
from pipeline.namespace.objects import Listing, ObjectInfo, rollup

MAX_KEYS = 1000


MAX_BUCKETS = 10_000


def list_buckets(call: S3Call) -> Response:
    """The caller's buckets by name, a page of ``max-buckets`` (default and at most 10,000) at a time."""
    max_buckets = call.int_param("max-buckets", MAX_BUCKETS, 1, MAX_BUCKETS)
    token = call.query.get("continuation-token")
    prefix = call.query.get("prefix")
    region = call.query.get("bucket-region") or None
    default_region = call.settings.s3_region
    locations = None if region is None else [region] + ([""] if region == default_region else [])
    buckets = call.names.list_buckets(call.tenant, prefix or "", _untoken(token) if token is not None else None,
                                      locations, max_buckets + 1)
    truncated = len(buckets) > max_buckets
    buckets = buckets[:max_buckets]
    entries = [BucketEntry(b.name, b.created, b.location or default_region) for b in buckets]
    return xml_answer(list_buckets_xml(call.owner, entries, prefix=prefix,
                                       continuation_token=_token(buckets[-1].name) if truncated else None))


def create_bucket(call: S3Call) -> Response:
    name = valid_bucket_name(call.bucket)
    locked = (call.header("x-amz-bucket-object-lock-enabled") or "").lower() == "true"
    acl = request_acl(call, call.tenant)  # x-amz-acl / x-amz-grant-*: refused before the bucket exists
    ownership = create_bucket_ownership(call, acl)  # x-amz-object-ownership, checked against the ACL
    location = parse_create_bucket(call.small_body(MAX_CREATE_BUCKET_XML)) or ""
    if locked:  # object lock: versioning Enabled for good
        call.names.create_locked_bucket(call.tenant, name, location)
    else:
        call.names.create_bucket(call.tenant, name, location)
    if acl is not None:
        call.names.put_bucket_config(call.tenant, name, ACL_CONFIG, acl.to_mongo())
    store_ownership(call, name, ownership)
    return empty_answer(200, {"Location": "/" + name})


def head_bucket(call: S3Call) -> Response:
    bucket = call.names.bucket(call.tenant, call.bucket)
    return empty_answer(200, {"x-amz-bucket-region": bucket.location or call.settings.s3_region})


def delete_bucket(call: S3Call) -> Response:
    call.names.delete_bucket(call.tenant, call.bucket)
    return empty_answer(204)


def get_location(call: S3Call) -> Response:
    bucket = call.names.bucket(call.tenant, call.bucket)
    return xml_answer(location_xml(bucket.location or None))


def get_versioning(call: S3Call) -> Response:
    call.names.bucket(call.tenant, call.bucket)
    return xml_answer(versioning_xml(call.names.versioning(call.bucket)))


def put_versioning(call: S3Call) -> Response:
    call.names.bucket(call.tenant, call.bucket)
    status = parse_versioning(call.small_body(64 << 10))
    call.names.set_versioning(call.tenant, call.bucket, status)
    return empty_answer(200)


def _entry(info: ObjectInfo) -> ObjectEntry:
    return ObjectEntry(info.key, info.last_modified, info.etag, info.size,
                       checksum_algorithm=info.checksum["algorithm"] if info.checksum else None)


def _listing(call: S3Call, after: str | None, max_keys: int) -> Listing:
    return call.names.list(call.tenant, call.bucket, call.query.get("prefix", ""),
                           call.query.get("delimiter", ""), after, max_keys)


def _token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii")


def _untoken(token: str) -> str:
    try:
        key = base64.b64decode(token.encode("ascii"), altchars=b"-_", validate=True).decode("utf-8")
        if key:
            return key
    except (binascii.Error, ValueError, UnicodeError):
        pass
    raise InvalidArgument("The continuation token provided is incorrect", ArgumentName="continuation-token",
                          ArgumentValue=token)


def list_objects(call: S3Call) -> Response:
    encoding = check_encoding_type(call.query.get("encoding-type"))
    max_keys = call.int_param("max-keys", MAX_KEYS, 0, MAX_KEYS, clamp=True)
    prefix, delimiter = call.query.get("prefix", ""), call.query.get("delimiter") or None
    if call.query.get("list-type") == "2":
        token = call.query.get("continuation-token")
        start_after = call.query.get("start-after")
        # a token wins over start-after; an empty one (echoed back) starts from the beginning, as S3's does
        after = _untoken(token) if token else start_after or None
        listing = _listing(call, after, max_keys)
        fetch_owner = (call.query.get("fetch-owner") or "").lower() == "true"
        return xml_answer(list_objects_v2_xml(
            call.bucket, [_entry(o) for o in listing.objects], listing.prefixes, prefix=prefix,
            delimiter=delimiter, max_keys=max_keys, is_truncated=listing.truncated, continuation_token=token,
            next_continuation_token=_token(listing.next_marker) if listing.truncated else None,
            start_after=start_after, encoding_type=encoding, owner=call.owner if fetch_owner else None))
    if "list-type" in call.query and call.query["list-type"] != "1":
        raise InvalidArgument("Invalid List Type specified in Request", ArgumentName="list-type",
                              ArgumentValue=call.query["list-type"])
    marker = call.query.get("marker", "")
    listing = _listing(call, marker or None, max_keys)
    # NextMarker only with a delimiter, as AWS: without one a client continues from the last key
    return xml_answer(list_objects_v1_xml(
        call.bucket, [_entry(o) for o in listing.objects], listing.prefixes, prefix=prefix, delimiter=delimiter,
        marker=marker, next_marker=listing.next_marker if delimiter else None, max_keys=max_keys,
        is_truncated=listing.truncated, encoding_type=encoding, owner=call.owner))


def list_versions(call: S3Call) -> Response:
    """An unversioned bucket: each key's one version, ``null``. Paging as ListObjects with a marker:
    after key-marker (its ``null`` version was the last listed), whatever version-id-marker says."""
    encoding = check_encoding_type(call.query.get("encoding-type"))
    max_keys = call.int_param("max-keys", MAX_KEYS, 0, MAX_KEYS, clamp=True)
    key_marker = call.query.get("key-marker", "")
    version_id_marker = call.query.get("version-id-marker", "")
    if version_id_marker and not key_marker:
        raise InvalidArgument("A version-id marker cannot be specified without a key marker.",
                              ArgumentName="version-id-marker", ArgumentValue=version_id_marker)
    if call.names.versioning(call.bucket) is not None:
        return _list_versioned(call, encoding, max_keys, key_marker, version_id_marker)
    listing = _listing(call, key_marker or None, max_keys)
    on_prefix = bool(listing.prefixes) and listing.prefixes[-1] == listing.next_marker
    return xml_answer(list_versions_xml(
        call.bucket, [_entry(o) for o in listing.objects], listing.prefixes, prefix=call.query.get("prefix", ""),
        delimiter=call.query.get("delimiter") or None, key_marker=key_marker, version_id_marker=version_id_marker,
        next_key_marker=listing.next_marker, next_version_id_marker=None if on_prefix else "null",
        max_keys=max_keys, is_truncated=listing.truncated, encoding_type=encoding, owner=call.owner))


def _list_versioned(call: S3Call, encoding: str | None, max_keys: int, key_marker: str,
                    version_id_marker: str) -> Response:
    """ListObjectVersions of a bucket that was ever versioned: every version and delete marker."""
    call.names.bucket(call.tenant, call.bucket)
    prefix, delimiter = call.query.get("prefix", ""), call.query.get("delimiter") or ""
    listing = call.names.versions.list(call.bucket, prefix, delimiter, key_marker, version_id_marker,
                                       max_keys, rollup, prefix_end)
    entries = []
    for e in listing.entries:
        d = e.doc
        checksum = d.get("checksum")
        entries.append(ObjectEntry(d["key"], d["created"], d.get("etag") or "", d.get("size") or 0,
                                   checksum_algorithm=checksum["algorithm"] if checksum else None,
                                   version_id=d["versionId"], is_latest=e.is_latest, delete_marker=e.marker))
    return xml_answer(list_versions_xml(
        call.bucket, entries, listing.prefixes, prefix=prefix, delimiter=delimiter or None, key_marker=key_marker,
        version_id_marker=version_id_marker, next_key_marker=listing.next_key_marker,
        next_version_id_marker=listing.next_version_id_marker, max_keys=max_keys,
        is_truncated=listing.truncated, encoding_type=encoding, owner=call.owner))
