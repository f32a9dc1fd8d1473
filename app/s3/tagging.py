"""Bucket and object tagging: Put/Get/DeleteBucketTagging, Put/Get/DeleteObjectTagging, and the
``x-amz-tagging`` header of PutObject, CreateMultipartUpload and CopyObject.

A bucket's tags are its ``tagging`` configuration: ``{"tags": [[key, value], ...]}`` in the order
the owner gave them; an object's are the ``tags`` of its name document. S3's limits apply: at most
50 tags on a bucket and 10 on an object, keys of 1 to 128 and values of up to 256 Unicode
characters from letters, digits, spaces and ``+ - = . _ : / @``, no key twice, nothing in the
reserved ``aws:`` prefix (InvalidTag); a body that is not a Tagging document is MalformedXML.
"""
from __future__ import annotations

import unicodedata

from urllib.parse import parse_qsl

from flask import Response

from app.s3.errors import InvalidArgument, InvalidTag, MalformedXML, NoSuchTagSet
from app.s3.request import S3Call, empty_answer, xml_answer
from app.s3.xmlio import _Doc, _children, _local, _parse

CONFIG = "tagging"
MAX_TAGGING_XML = 64 * 1024
MAX_BUCKET_TAGS = 50
MAX_OBJECT_TAGS = 10
TOO_MANY = {MAX_BUCKET_TAGS: "Bucket tag count cannot be greater than 50",
            MAX_OBJECT_TAGS: "Object tags cannot be greater than 10"}
MAX_KEY_CHARS = 128
MAX_VALUE_CHARS = 256
RESERVED_PREFIX = "aws:"
_PUNCTUATION = frozenset("+-=._:/@")


def _allowed(text: str) -> bool:
    """Letters, digits and spaces of any script (S3's ``\\p{L}\\p{Z}\\p{N}``) and ``+ - = . _ : / @``."""
    return all(c in _PUNCTUATION or unicodedata.category(c)[0] in "LNZ" for c in text)


def _only(element, allowed: set[str]) -> None:
    for child in element:
        if _local(child.tag) not in allowed:
            raise MalformedXML(f"Unexpected element {_local(child.tag)!r} in {_local(element.tag)}.")


def _one_text(element, name: str) -> str:
    found = _children(element, name)
    if len(found) != 1:
        raise MalformedXML(f"Each {_local(element.tag)} needs exactly one {name}.")
    return found[0].text or ""


def parse_tagging(body: bytes, max_tags: int = MAX_BUCKET_TAGS) -> list[tuple[str, str]]:
    """The (key, value) pairs of a Tagging document, validated with S3's limits."""
    root = _parse(body, MAX_TAGGING_XML, "Tagging")
    _only(root, {"TagSet"})
    tag_sets = _children(root, "TagSet")
    if len(tag_sets) != 1:
        raise MalformedXML("Tagging needs exactly one TagSet.")
    _only(tag_sets[0], {"Tag"})
    tags: list[tuple[str, str]] = []
    for tag in _children(tag_sets[0], "Tag"):
        _only(tag, {"Key", "Value"})
        tags.append((_one_text(tag, "Key"), _one_text(tag, "Value")))
    return valid_tags(tags, max_tags)


def valid_tags(tags: list[tuple[str, str]], max_tags: int) -> list[tuple[str, str]]:
    """``tags`` when they keep S3's limits (at most ``max_tags`` of them); InvalidTag otherwise."""
    if len(tags) > max_tags:
        raise InvalidTag(TOO_MANY.get(max_tags, f"Tag count cannot be greater than {max_tags}"))
    seen: set[str] = set()
    for key, value in tags:
        if not 1 <= len(key) <= MAX_KEY_CHARS or not _allowed(key):
            raise InvalidTag("The TagKey you have provided is invalid", TagKey=key)
        if len(value) > MAX_VALUE_CHARS or not _allowed(value):
            raise InvalidTag("The TagValue you have provided is invalid", TagKey=key, TagValue=value)
        if key.lower().startswith(RESERVED_PREFIX):
            raise InvalidTag("Your TagKey cannot be prefixed with aws:", TagKey=key)
        if key in seen:
            raise InvalidTag("Cannot provide multiple Tags with the same key", TagKey=key)
        seen.add(key)
    return tags


def tagging_xml(tags: list[tuple[str, str]] | list[list[str]]) -> bytes:
    doc = _Doc("Tagging").open("TagSet")
    for key, value in tags:
        doc.open("Tag").el("Key", key).el("Value", value).close("Tag")
    return doc.close("TagSet").bytes()


def put_bucket_tagging(call: S3Call) -> Response:
    call.names.bucket(call.tenant, call.bucket)  # NoSuchBucket / AccessDenied before the body
    tags = parse_tagging(call.small_body(MAX_TAGGING_XML))  # Content-MD5 or x-amz-checksum-*: verified
    if tags:
        call.names.put_bucket_config(call.tenant, call.bucket, CONFIG, {"tags": [list(t) for t in tags]})
    else:  # an empty TagSet leaves the bucket without tags
        call.names.delete_bucket_config(call.tenant, call.bucket, CONFIG)
    return empty_answer(204)


def get_bucket_tagging(call: S3Call) -> Response:
    config = call.names.bucket_config(call.tenant, call.bucket, CONFIG)
    if not config or not config.get("tags"):
        raise NoSuchTagSet(BucketName=call.bucket)
    return xml_answer(tagging_xml(config["tags"]))


def delete_bucket_tagging(call: S3Call) -> Response:
    call.names.delete_bucket_config(call.tenant, call.bucket, CONFIG)
    return empty_answer(204)


# --- object tags ----------------------------------------------------------------------------------

def header_tags(call: S3Call) -> list[list[str]] | None:
    """The tags of ``x-amz-tagging`` (``k1=v1&k2=v2``, URL-encoded), validated; None without the header."""
    raw = call.header("x-amz-tagging")
    if raw is None:
        return None
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="strict")  # "k" is k=""
    except (ValueError, UnicodeDecodeError):
        pairs = None
    if pairs is None or len({k for k, _ in pairs}) != len(pairs):
        raise InvalidArgument("The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query "
                              "parameters without tag name duplicates.", ArgumentName="x-amz-tagging",
                              ArgumentValue=raw)
    return [list(t) for t in valid_tags(pairs, MAX_OBJECT_TAGS)] or None


def tagging_count(tags) -> dict:
    """``x-amz-tagging-count`` of a GET or HEAD, when the object has tags."""
    return {"x-amz-tagging-count": str(len(tags))} if tags else {}


def _check_version(call: S3Call) -> str | None:
    from app.s3.objects import check_version  # app.s3.objects imports this module

    return check_version(call)


def _version_header(info) -> dict:
    return {"x-amz-version-id": info.version_id} if info.version_id else {}


def put_object_tagging(call: S3Call) -> Response:
    version = _check_version(call)
    call.names.head(call.tenant, call.bucket, call.key, version)  # NoSuchKey before the body
    tags = parse_tagging(call.small_body(MAX_TAGGING_XML), MAX_OBJECT_TAGS)
    info = call.names.set_tags(call.tenant, call.bucket, call.key, [list(t) for t in tags], version)
    return empty_answer(200, _version_header(info))


def get_object_tagging(call: S3Call) -> Response:
    version = _check_version(call)
    info = call.names.head(call.tenant, call.bucket, call.key, version)
    # by key, as S3 keeps a tag set (the order of x-amz-tagging or of the XML is not kept)
    tags = sorted(info.tags, key=lambda t: t[0]) if info.tags else info.tags
    return xml_answer(tagging_xml(tags), headers=_version_header(info))


def delete_object_tagging(call: S3Call) -> Response:
    info = call.names.set_tags(call.tenant, call.bucket, call.key, None, _check_version(call))
    return empty_answer(204, _version_header(info))
