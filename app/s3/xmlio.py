"""S3 XML: request bodies parsed with defusedxml, answers rendered as bytes.

Parsing is size-bounded and namespace tolerant; anything wrong (not XML, a DTD or entity,
the wrong root, a missing element) is MalformedXML. Rendering escapes XML's special characters;
a character XML 1.0 cannot carry at all is refused (InvalidArgument) unless the value is
URL-encoded (``encoding-type=url``), which is how AWS clients list such keys.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple
from urllib.parse import quote
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from app.s3.errors import InvalidArgument, InvalidRequest, MalformedXML
from pipeline.timefmt import iso8601_seconds

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
DEFAULT_REGION = "us-east-1"
MAX_CREATE_BUCKET_XML = 64 * 1024
MAX_COMPLETE_XML = 4 << 20  # 10,000 parts with ETags and checksums
MAX_DELETE_XML = 2 << 20  # 1,000 keys of up to 1,024 bytes
MAX_DELETE_KEYS = 1000
MAX_PART_NUMBER = 10000
CHECKSUM_ELEMENTS = {"ChecksumCRC32": "CRC32", "ChecksumCRC32C": "CRC32C", "ChecksumCRC64NVME": "CRC64NVME",
                     "ChecksumSHA1": "SHA1", "ChecksumSHA256": "SHA256"}
_ELEMENT_OF = {v: k for k, v in CHECKSUM_ELEMENTS.items()}
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\r": "&#13;"})


# --- text -----------------------------------------------------------------------------------------

def xml_safe(text: str) -> bool:
    """Whether XML 1.0 can carry ``text`` (no control characters but tab and newlines, no lone surrogates)."""
    return _NOT_XML.search(text) is None


def escape(text: str) -> str:
    """Escaped element text; characters XML 1.0 cannot carry become U+FFFD (for error messages)."""
    return _NOT_XML.sub("\ufffd", text).translate(_ESCAPES)


def _strict(text: str) -> str:
    if _NOT_XML.search(text):
        raise InvalidArgument("A value in this answer holds characters XML 1.0 cannot carry; list with "
                              "encoding-type=url", ArgumentName="encoding-type")
    return text.translate(_ESCAPES)


def url_encode_key(key: str) -> str:
    """A key as AWS encodes it for ``encoding-type=url``: UTF-8, '/' kept, space as %20, '+' as %2B.

    botocore decodes with unquote_plus, so no bare '+' may remain: quote() encodes it."""
    return quote(key, safe="/~")


def check_encoding_type(value: str | None) -> str | None:
    """The ``encoding-type`` parameter: None or "url"."""
    if value is None:
        return None
    if value.lower() != "url":
        raise InvalidArgument("Invalid Encoding Method specified in Request", ArgumentName="encoding-type",
                              ArgumentValue=value)
    return "url"


def quote_etag(etag: str) -> str:
    return '"' + strip_etag(etag) + '"'


def strip_etag(etag: str) -> str:
    """An ETag as a client sent it, without surrounding whitespace and quotes."""
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


# --- parsing --------------------------------------------------------------------------------------

def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _parse(body: bytes, limit: int, root: str) -> Element:
    if len(body) > limit:
        raise MalformedXML(f"The XML you provided is larger than {limit} bytes.")
    try:
        element = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError, UnicodeError):
        raise MalformedXML() from None
    if _local(element.tag) != root:
        raise MalformedXML(f"The XML you provided is not a {root} document.")
    return element


def _children(element: Element, name: str) -> list[Element]:
    return [c for c in element if _local(c.tag) == name]


def _child_text(element: Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name:
            return child.text or ""
    return None


def read_limited(pieces: Iterable, limit: int) -> bytes:
    """A small request body in one piece; MalformedXML past ``limit`` bytes."""
    parts, total = [], 0
    for piece in pieces:
        total += len(piece)
        if total > limit:
            raise MalformedXML(f"The XML you provided is larger than {limit} bytes.")
        parts.append(bytes(piece))
    return b"".join(parts)


def parse_create_bucket(body: bytes) -> str | None:
    """The LocationConstraint of a CreateBucket body (None for an empty body or element)."""
    if not body.strip():
        return None
    element = _parse(body, MAX_CREATE_BUCKET_XML, "CreateBucketConfiguration")
    location = (_child_text(element, "LocationConstraint") or "").strip()
    return location or None


class CompletedPart(NamedTuple):
    part_number: int
    etag: str  # without quotes
    checksums: dict  # {"CRC32": base64, ...}, the values the client sent


def parse_complete_multipart(body: bytes) -> list[CompletedPart]:
    element = _parse(body, MAX_COMPLETE_XML, "CompleteMultipartUpload")
    parts = []
    for part in _children(element, "Part"):
        number, etag = _child_text(part, "PartNumber"), _child_text(part, "ETag")
        if number is None or etag is None or not number.strip().isdigit():
            raise MalformedXML("Each Part needs a PartNumber and an ETag.")
        if not 1 <= int(number) <= MAX_PART_NUMBER:
            raise MalformedXML(f"PartNumber must be an integer from 1 to {MAX_PART_NUMBER}.")
        sums = {algorithm: text.strip() for name, algorithm in CHECKSUM_ELEMENTS.items()
                if (text := _child_text(part, name))}
        parts.append(CompletedPart(int(number), strip_etag(etag), sums))
    if not parts:
        raise MalformedXML("CompleteMultipartUpload names no Part.")
    if len(parts) > MAX_PART_NUMBER:
        raise MalformedXML(f"CompleteMultipartUpload names more than {MAX_PART_NUMBER} parts.")
    return parts


class DeleteRequest(NamedTuple):
    quiet: bool
    keys: list[str]
    versions: list[str | None] = []  # each key's VersionId, None where it names none


def parse_delete(body: bytes) -> DeleteRequest:
    element = _parse(body, MAX_DELETE_XML, "Delete")
    quiet = (_child_text(element, "Quiet") or "false").strip().lower()
    if quiet not in ("true", "false"):
        raise MalformedXML("Quiet must be true or false.")
    keys, versions = [], []
    for obj in _children(element, "Object"):
        key = _child_text(obj, "Key")
        if key is None:
            raise MalformedXML("Each Object needs a Key.")
        keys.append(key)
        versions.append(_child_text(obj, "VersionId"))
    if not keys:
        raise MalformedXML("Delete names no Object.")
    if len(keys) > MAX_DELETE_KEYS:
        raise MalformedXML(f"Delete names more than {MAX_DELETE_KEYS} objects.")
    return DeleteRequest(quiet == "true", keys, versions)


# --- rendering ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Owner:
    id: str
    display_name: str


@dataclass(frozen=True)
class BucketEntry:
    name: str
    created: float
    region: str | None = None


@dataclass(frozen=True)
class ObjectEntry:
    key: str
    last_modified: float
    etag: str
    size: int
    storage_class: str = "STANDARD"
    checksum_algorithm: str | None = None
    version_id: str = "null"  # ListObjectVersions only
    is_latest: bool = True
    delete_marker: bool = False


@dataclass(frozen=True)
class PartEntry:
    part_number: int
    last_modified: float
    etag: str
    size: int
    checksums: dict = field(default_factory=dict)  # {"CRC32": base64}


@dataclass(frozen=True)
class UploadEntry:
    key: str
    upload_id: str
    initiated: float
    storage_class: str = "STANDARD"


@dataclass(frozen=True)
class DeleteError:
    key: str
    code: str
    message: str
    version_id: str | None = None


class _Doc:
    def __init__(self, root: str, url_encoded: bool = False):
        self._parts = ['<?xml version="1.0" encoding="UTF-8"?>\n', f'<{root} xmlns="{NS}">']
        self._root = root
        self._url = url_encoded

    def el(self, name: str, value) -> "_Doc":
        """An element with text; None writes nothing."""
        if value is None:
            return self
        if isinstance(value, bool):
            value = "true" if value else "false"
        self._parts.append(f"<{name}>{_strict(str(value))}</{name}>")
        return self

    def name(self, element: str, value: str | None) -> "_Doc":
        """An element holding a key, prefix, delimiter or marker: URL-encoded under encoding-type=url."""
        if value is None:
            return self
        return self.el(element, url_encode_key(value) if self._url else value)

    def open(self, name: str) -> "_Doc":
        self._parts.append(f"<{name}>")
        return self

    def close(self, name: str) -> "_Doc":
        self._parts.append(f"</{name}>")
        return self

    def owner(self, owner: Owner | None, element: str = "Owner") -> "_Doc":
        if owner is not None:
            self.open(element).el("ID", owner.id).el("DisplayName", owner.display_name).close(element)
        return self

    def checksums(self, sums: dict | None) -> "_Doc":
        for algorithm, value in (sums or {}).items():
            self.el(_ELEMENT_OF[algorithm], value)
        return self

    def common_prefixes(self, prefixes: Iterable[str]) -> "_Doc":
        for prefix in prefixes:
            self.open("CommonPrefixes").name("Prefix", prefix).close("CommonPrefixes")
        return self

    def bytes(self) -> bytes:
        self._parts.append(f"</{self._root}>")
        return "".join(self._parts).encode("utf-8")


def list_buckets_xml(owner: Owner, buckets: Iterable[BucketEntry], *, prefix: str | None = None,
                     continuation_token: str | None = None) -> bytes:
    """ListAllMyBucketsResult; ``continuation_token`` continues a truncated page, ``prefix`` is echoed."""
    doc = _Doc("ListAllMyBucketsResult").owner(owner).open("Buckets")
    for b in buckets:
        doc.open("Bucket").el("Name", b.name).el("CreationDate", iso8601_seconds(b.created))
        doc.el("BucketRegion", b.region).close("Bucket")
    return doc.close("Buckets").el("ContinuationToken", continuation_token).el("Prefix", prefix).bytes()


def _object(doc: _Doc, o: ObjectEntry, owner: Owner | None, element: str = "Contents",
            version: bool = False) -> None:
    doc.open(element).name("Key", o.key)
    if version:
        doc.el("VersionId", o.version_id).el("IsLatest", o.is_latest)
    doc.el("LastModified", iso8601_seconds(o.last_modified)).el("ETag", quote_etag(o.etag))
    if o.checksum_algorithm and not version:
        doc.el("ChecksumAlgorithm", o.checksum_algorithm)
    doc.el("Size", o.size)
    if version:
        doc.owner(owner).el("StorageClass", o.storage_class)
    else:
        doc.el("StorageClass", o.storage_class).owner(owner)
    doc.close(element)


def list_objects_v1_xml(bucket: str, contents: Iterable[ObjectEntry], common_prefixes: Iterable[str], *,
                        prefix: str = "", delimiter: str | None = None, marker: str = "",
                        next_marker: str | None = None, max_keys: int = 1000, is_truncated: bool = False,
                        encoding_type: str | None = None, owner: Owner | None = None) -> bytes:
    """ListBucketResult of ListObjects (v1); ``owner`` is shown on every entry when given."""
    doc = _Doc("ListBucketResult", url_encoded=encoding_type == "url")
    doc.el("Name", bucket).name("Prefix", prefix).name("Marker", marker).el("MaxKeys", max_keys)
    doc.name("Delimiter", delimiter).el("IsTruncated", is_truncated)
    if is_truncated:
        doc.name("NextMarker", next_marker)
    doc.el("EncodingType", encoding_type)
    for o in contents:
        _object(doc, o, owner)
    return doc.common_prefixes(common_prefixes).bytes()


def list_objects_v2_xml(bucket: str, contents: Iterable[ObjectEntry], common_prefixes: Iterable[str], *,
                        prefix: str = "", delimiter: str | None = None, max_keys: int = 1000,
                        is_truncated: bool = False, continuation_token: str | None = None,
                        next_continuation_token: str | None = None, start_after: str | None = None,
                        encoding_type: str | None = None, owner: Owner | None = None) -> bytes:
    """ListBucketResult of ListObjectsV2; pass ``owner`` only for fetch-owner=true."""
    contents, common_prefixes = list(contents), list(common_prefixes)
    doc = _Doc("ListBucketResult", url_encoded=encoding_type == "url")
    doc.el("Name", bucket).name("Prefix", prefix).el("MaxKeys", max_keys)
    doc.el("KeyCount", len(contents) + len(common_prefixes)).name("Delimiter", delimiter)
    doc.el("IsTruncated", is_truncated).el("ContinuationToken", continuation_token)
    doc.el("NextContinuationToken", next_continuation_token if is_truncated else None)
    doc.name("StartAfter", start_after).el("EncodingType", encoding_type)
    for o in contents:
        _object(doc, o, owner)
    return doc.common_prefixes(common_prefixes).bytes()


def list_versions_xml(bucket: str, contents: Iterable[ObjectEntry], common_prefixes: Iterable[str], *,
                      prefix: str = "", delimiter: str | None = None, key_marker: str = "",
                      version_id_marker: str = "", next_key_marker: str | None = None,
                      next_version_id_marker: str | None = "null", max_keys: int = 1000,
                      is_truncated: bool = False, encoding_type: str | None = None,
                      owner: Owner | None = None) -> bytes:
    """ListVersionsResult of an unversioned bucket: one ``null`` version per key, the latest. A page
    that ends on a common prefix has no NextVersionIdMarker."""
    doc = _Doc("ListVersionsResult", url_encoded=encoding_type == "url")
    doc.el("Name", bucket).name("Prefix", prefix).name("KeyMarker", key_marker)
    doc.el("VersionIdMarker", version_id_marker)
    doc.el("MaxKeys", max_keys).name("Delimiter", delimiter).el("IsTruncated", is_truncated)
    if is_truncated:
        doc.name("NextKeyMarker", next_key_marker).el("NextVersionIdMarker", next_version_id_marker)
    doc.el("EncodingType", encoding_type)
    for o in contents:
        if o.delete_marker:
            doc.open("DeleteMarker").name("Key", o.key).el("VersionId", o.version_id).el("IsLatest", o.is_latest)
            doc.el("LastModified", iso8601_seconds(o.last_modified)).owner(owner).close("DeleteMarker")
        else:
            _object(doc, o, owner, element="Version", version=True)
    return doc.common_prefixes(common_prefixes).bytes()


def location_xml(region: str | None) -> bytes:
    """GetBucketLocation: empty for us-east-1, as AWS answers."""
    doc = _Doc("LocationConstraint")
    if region and region != DEFAULT_REGION:
        doc._parts.append(_strict(region))
    return doc.bytes()


def versioning_xml(status: str | None = None) -> bytes:
    """GetBucketVersioning: no Status for a bucket that was never versioned."""
    return _Doc("VersioningConfiguration").el("Status", status).bytes()


def parse_versioning(body: bytes) -> str:
    """PutBucketVersioning's Status (MFADelete, when Disabled, is accepted and ignored)."""
    element = _parse(body, 64 << 10, "VersioningConfiguration")
    status = _child_text(element, "Status")
    mfa = _child_text(element, "MfaDelete")
    if status not in ("Enabled", "Suspended") or (mfa is not None and mfa not in ("Disabled", "Enabled")):
        raise MalformedXML()
    if mfa == "Enabled":
        raise InvalidRequest("MFA delete is not supported by this store")
    return status


def initiate_multipart_xml(bucket: str, key: str, upload_id: str) -> bytes:
    return (_Doc("InitiateMultipartUploadResult").el("Bucket", bucket).el("Key", key)
            .el("UploadId", upload_id).bytes())


def complete_multipart_xml(location: str, bucket: str, key: str, etag: str, checksums: dict | None = None) -> bytes:
    return (_Doc("CompleteMultipartUploadResult").el("Location", location).el("Bucket", bucket).el("Key", key)
            .el("ETag", quote_etag(etag)).checksums(checksums).bytes())


def list_parts_xml(bucket: str, key: str, upload_id: str, parts: Iterable[PartEntry], *,
                   part_number_marker: int = 0, next_part_number_marker: int | None = None,
                   max_parts: int = 1000, is_truncated: bool = False, owner: Owner | None = None,
                   storage_class: str = "STANDARD", checksum_algorithm: str | None = None) -> bytes:
    doc = _Doc("ListPartsResult").el("Bucket", bucket).el("Key", key).el("UploadId", upload_id)
    doc.owner(owner, "Initiator").owner(owner).el("StorageClass", storage_class)
    doc.el("PartNumberMarker", part_number_marker).el("NextPartNumberMarker", next_part_number_marker)
    doc.el("MaxParts", max_parts).el("IsTruncated", is_truncated).el("ChecksumAlgorithm", checksum_algorithm)
    for p in parts:
        doc.open("Part").el("PartNumber", p.part_number).el("LastModified", iso8601_seconds(p.last_modified))
        doc.el("ETag", quote_etag(p.etag)).el("Size", p.size).checksums(p.checksums).close("Part")
    return doc.bytes()


def list_uploads_xml(bucket: str, uploads: Iterable[UploadEntry], common_prefixes: Iterable[str], *,
                     prefix: str = "", delimiter: str | None = None, key_marker: str = "",
                     upload_id_marker: str = "", next_key_marker: str | None = None,
                     next_upload_id_marker: str | None = None, max_uploads: int = 1000,
                     is_truncated: bool = False, encoding_type: str | None = None,
                     owner: Owner | None = None) -> bytes:
    doc = _Doc("ListMultipartUploadsResult", url_encoded=encoding_type == "url")
    doc.el("Bucket", bucket).name("KeyMarker", key_marker).el("UploadIdMarker", upload_id_marker)
    if is_truncated:
        doc.name("NextKeyMarker", next_key_marker).el("NextUploadIdMarker", next_upload_id_marker)
    doc.name("Prefix", prefix).name("Delimiter", delimiter).el("MaxUploads", max_uploads)
    doc.el("IsTruncated", is_truncated).el("EncodingType", encoding_type)
    for u in uploads:
        doc.open("Upload").name("Key", u.key).el("UploadId", u.upload_id).owner(owner, "Initiator").owner(owner)
        doc.el("StorageClass", u.storage_class).el("Initiated", iso8601_seconds(u.initiated)).close("Upload")
    return doc.common_prefixes(common_prefixes).bytes()


def copy_object_xml(etag: str, last_modified: float, checksums: dict | None = None) -> bytes:
    return (_Doc("CopyObjectResult").el("LastModified", iso8601_seconds(last_modified))
            .el("ETag", quote_etag(etag)).checksums(checksums).bytes())


def copy_part_xml(etag: str, last_modified: float, checksums: dict | None = None) -> bytes:
    return (_Doc("CopyPartResult").el("LastModified", iso8601_seconds(last_modified))
            .el("ETag", quote_etag(etag)).checksums(checksums).bytes())


@dataclass(frozen=True)
class DeletedEntry:
    """One Deleted element of a versioned bucket: the version named, or the marker written."""
    key: str
    version_id: str | None = None  # the version the request named
    delete_marker: bool = False
    marker_version_id: str | None = None  # the delete marker written or removed


def delete_result_xml(deleted: Iterable["str | DeletedEntry"], errors: Iterable[DeleteError],
                      quiet: bool = False) -> bytes:
    """DeleteResult; quiet mode lists only the errors."""
    doc = _Doc("DeleteResult")
    if not quiet:
        for d in deleted:
            if isinstance(d, str):
                doc.open("Deleted").el("Key", d).close("Deleted")
                continue
            doc.open("Deleted").el("Key", d.key).el("VersionId", d.version_id)
            if d.delete_marker:
                doc.el("DeleteMarker", True).el("DeleteMarkerVersionId", d.marker_version_id)
            doc.close("Deleted")
    for e in errors:
        doc.open("Error").el("Key", e.key)
        if getattr(e, "version_id", None):
            doc.el("VersionId", e.version_id)
        doc.el("Code", e.code).el("Message", e.message).close("Error")
    return doc.bytes()


@dataclass(frozen=True)
class ObjectPartEntry:
    part_number: int
    size: int
    checksums: dict = field(default_factory=dict)  # {"CRC32": base64}


@dataclass(frozen=True)
class ObjectPartsPage:
    parts: list[ObjectPartEntry]
    total: int
    marker: int
    max_parts: int
    next_marker: int
    truncated: bool


def object_attributes_xml(*, etag: str | None = None, checksum: tuple[dict, str] | None = None,
                          parts: ObjectPartsPage | None = None, storage_class: str | None = None,
                          size: int | None = None) -> bytes:
    """GetObjectAttributesResponse: the ETag unquoted (as AWS writes it there), ``checksum`` as
    ({algorithm: value}, type), the parts of a multipart object one page at a time."""
    doc = _Doc("GetObjectAttributesResponse").el("ETag", etag)
    if checksum is not None:
        doc.open("Checksum").checksums(checksum[0]).el("ChecksumType", checksum[1]).close("Checksum")
    if parts is not None:
        doc.open("ObjectParts").el("PartsCount", parts.total).el("PartNumberMarker", parts.marker)
        doc.el("NextPartNumberMarker", parts.next_marker).el("MaxParts", parts.max_parts)
        doc.el("IsTruncated", parts.truncated)
        for p in parts.parts:
            doc.open("Part").el("PartNumber", p.part_number).el("Size", p.size).checksums(p.checksums).close("Part")
        doc.close("ObjectParts")
    return doc.el("StorageClass", storage_class).el("ObjectSize", size).bytes()


def complete_multipart_checksum_xml(location: str, bucket: str, key: str, etag: str, checksums: dict,
                                    checksum_type: str) -> bytes:
    """CompleteMultipartUploadResult of an upload with a checksum algorithm: the object's checksum and type."""
    return (_Doc("CompleteMultipartUploadResult").el("Location", location).el("Bucket", bucket).el("Key", key)
            .el("ETag", quote_etag(etag)).checksums(checksums).el("ChecksumType", checksum_type).bytes())
