"""Object operations: PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects, CopyObject.

Each handler turns one S3 call into ObjectNames calls and shapes the answer; bytes stream in
through the verified PayloadReader and out through the store's verified reads.
"""
from __future__ import annotations

from typing import Iterator
from urllib.parse import quote, unquote_to_bytes

from flask import Response, stream_with_context
from werkzeug.http import parse_range_header

from app.s3 import checksums
from app.s3.access import request_acl_doc, require
from app.s3.lock import bypass_governance, header_lock, lock_headers
from app.s3.tagging import header_tags, tagging_count
from app.s3.errors import (AccessDenied, InvalidArgument, InvalidPartNumber, InvalidRange,
                           InvalidRequest, NoSuchKey, NotModified, PreconditionFailed, s3_error_for)
from app.s3.request import (S3Call, empty_answer, from_http_date, object_attributes, to_http_date,
                            xml_answer)
from app.s3.xmlio import (MAX_DELETE_XML, DeleteError, ObjectPartEntry, ObjectPartsPage, copy_object_xml,
                          delete_result_xml, object_attributes_xml, DeletedEntry, parse_delete, quote_etag, strip_etag)
from pipeline.errors import StoreError
from pipeline.namespace.names import valid_key
from pipeline.namespace.objects import ObjectAttributes, ObjectInfo, WriteCondition

# response-* query parameters of GetObject and the header each overrides
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


def checksum_header(checksum: dict | None) -> dict:
    if not checksum:
        return {}
    return {checksums.header_name(checksum["algorithm"]): checksum["value"]}


def checksum_type_of(checksum: dict) -> str:
    """COMPOSITE or FULL_OBJECT; a checksum stored without a type covers the whole object."""
    return checksum.get("type") or checksums.FULL_OBJECT


def checksum_mode(call: S3Call) -> bool:
    """Whether a GET or HEAD asks for the object's checksum (``x-amz-checksum-mode: ENABLED``)."""
    return (call.header("x-amz-checksum-mode") or "").upper() == "ENABLED"


def write_condition(call: S3Call) -> WriteCondition:
    """The destination's If-Match / If-None-Match of a PUT, a copy or a completion."""
    if_match = call.header("If-Match")
    if_none_match = call.header("If-None-Match")
    etags = None
    if if_match is not None:
        etags = tuple(strip_etag(v) for v in if_match.split(",") if v.strip())
        if "*" in etags:
            etags = ("*",)
    none_match = None
    if if_none_match is not None:
        none_match = tuple(strip_etag(v) for v in if_none_match.split(",") if v.strip())
    if none_match and "*" in none_match:
        return WriteCondition(etags, True)
    return WriteCondition(etags, False, none_match or None)


def checksum_elements(checksum: dict | None) -> dict | None:
    return {checksum["algorithm"]: checksum["value"]} if checksum else None


def checksum_of(reader) -> dict | None:
    """The checksum a finished PayloadReader verified or computed, as the store keeps it."""
    if reader.checksum is None:
        return None
    algorithm, value = reader.checksum
    return {"algorithm": algorithm, "value": value}


def etag_matches(header: str, etag: str) -> bool:
    """Whether an If-Match / If-None-Match list names ``etag`` (``*`` names every existing object)."""
    candidates = [c.strip() for c in header.split(",")]
    return "*" in candidates or any(strip_etag(c) == etag for c in candidates if c)


def check_version(call: S3Call) -> str | None:
    """The ``versionId`` a call names (None when it names none); an empty one is refused as S3 does."""
    version = call.query.get("versionId")
    if version == "":
        raise InvalidArgument("Version id cannot be the empty string", ArgumentName="versionId", ArgumentValue="")
    return version


def version_headers(info: ObjectInfo) -> dict:
    """x-amz-version-id of an object of a versioned bucket; nothing in a bucket never versioned."""
    return {"x-amz-version-id": info.version_id} if info.version_id else {}


def metadata_value(value: str) -> str:
    """A user metadata value as the response header carries it. The value is kept as its header's
    bytes (WSGI text is latin-1); botocore sends non-ASCII text as UTF-8 but reads answers as
    latin-1, so UTF-8 text that latin-1 can carry goes back as latin-1 (it round-trips), any other
    value as the bytes sent."""
    if value.isascii():
        return value
    try:
        text = value.encode("latin-1").decode("utf-8")
        text.encode("latin-1")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value
    return text


def write_version_headers(call: S3Call, info: ObjectInfo) -> dict:
    """x-amz-version-id of a write's answer: none for the null version of a bucket whose versioning
    was never Enabled (only Suspended), which answers as a bucket never versioned does."""
    if info.version_id == "null" and not call.names.versioning_ever_enabled(call.bucket):
        return {}
    return version_headers(info)


def get_object_torrent(call: S3Call) -> Response:
    """GetObjectTorrent: torrents are not served; 404 NoSuchKey, S3's answer where it offers none."""
    call.names.head(call.tenant, call.bucket, call.key, check_version(call))
    raise NoSuchKey("This store serves no torrent of the object.", Key=call.key)


def object_headers(info: ObjectInfo) -> dict:
    headers = {"ETag": quote_etag(info.etag), "Last-Modified": to_http_date(info.last_modified),
               "Accept-Ranges": "bytes", "Content-Type": info.content_type}
    headers.update(info.headers)
    for name, value in info.metadata.items():
        headers["x-amz-meta-" + name] = metadata_value(value)
    headers.update(tagging_count(info.tags))
    headers.update(version_headers(info))
    headers.update(lock_headers(info))
    return headers


def expiration_header(call: S3Call, info: ObjectInfo) -> dict:
    """x-amz-expiration: when the bucket's lifecycle rules expire this current object, and by which rule."""
    if "versionId" in call.query:  # a version named by id: noncurrent versions expire by their own rules
        return {}
    expiry = call.names.expiration(call.bucket, info, call.settings.lifecycle_day_s)
    if expiry is None:
        return {}
    return {"x-amz-expiration": f'expiry-date="{to_http_date(expiry[0])}", rule-id="{expiry[1]}"'}


def check_preconditions(call: S3Call, info: ObjectInfo, prefix: str = "") -> None:
    """RFC 7232 order, as S3 applies it: If-Match before If-Unmodified-Since, If-None-Match before
    If-Modified-Since. ``prefix`` "x-amz-copy-source-" checks a copy's source (412 only)."""
    modified = int(info.last_modified)
    if_match = call.header(prefix + "If-Match")
    unmodified_since = from_http_date(call.header(prefix + "If-Unmodified-Since"))
    if if_match is not None:
        if not etag_matches(if_match, info.etag):
            raise PreconditionFailed(Condition=prefix + "If-Match")
    elif unmodified_since is not None and modified > unmodified_since:
        raise PreconditionFailed(Condition=prefix + "If-Unmodified-Since")
    if_none_match = call.header(prefix + "If-None-Match")
    modified_since = from_http_date(call.header(prefix + "If-Modified-Since"))
    unchanged = None
    if if_none_match is not None:
        unchanged = etag_matches(if_none_match, info.etag)
        what = "If-None-Match"
    elif modified_since is not None:
        unchanged = modified <= modified_since
        what = "If-Modified-Since"
    if unchanged:
        if prefix:
            raise PreconditionFailed(Condition=prefix + what)
        err = NotModified()
        err.headers = {"ETag": quote_etag(info.etag), "Last-Modified": to_http_date(info.last_modified)}
        raise err


def _byte_range(value: str, size: int) -> tuple[int, int] | None:
    """[start, stop) of a single ``bytes=`` range; None to serve the whole object (a malformed or
    multiple range is ignored, as AWS does); InvalidRange when it lies past the end."""
    rng = parse_range_header(value)
    if rng is None or rng.units != "bytes" or len(rng.ranges) != 1:
        return None
    span = rng.range_for_length(size)
    if span is None:
        err = InvalidRange(ActualObjectSize=str(size), RangeRequested=value)
        err.headers = {"Content-Range": f"bytes */{size}"}
        raise err
    return span


def get_object(call: S3Call, head_only: bool = False) -> Response:
    version = check_version(call)
    info = call.names.head(call.tenant, call.bucket, call.key, version)
    check_preconditions(call, info)
    headers = object_headers(info)
    headers.update(expiration_header(call, info))
    size, start, stop, status, whole = info.size, 0, info.size, 200, True
    if "partNumber" in call.query:
        number = call.int_param("partNumber", 1, 1, 10_000)
        sizes = info.part_sizes or [size]
        if number > len(sizes):
            raise InvalidPartNumber(PartNumberRequested=str(number), ActualPartCount=str(len(sizes)))
        start = sum(sizes[:number - 1])
        stop = start + sizes[number - 1]
        if info.part_sizes:
            headers["x-amz-mp-parts-count"] = str(len(sizes))
            part_checksum = (info.part_checksums or [None] * number)[number - 1]
            if part_checksum and info.checksum and checksum_mode(call):  # a part's own, as S3 returns it
                headers.update(checksum_header({"algorithm": info.checksum["algorithm"], "value": part_checksum}))
                headers["x-amz-checksum-type"] = checksum_type_of(info.checksum)
        status, whole = 206, False
    elif call.header("Range"):
        span = _byte_range(call.header("Range"), size)
        if span is not None:
            (start, stop), status, whole = span, 206, False
    if status == 206 and stop > start:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    if whole and info.checksum and checksum_mode(call):  # it covers the whole object: never a range or a part
        headers.update(checksum_header(info.checksum))
        headers["x-amz-checksum-type"] = checksum_type_of(info.checksum)
    for param, header in RESPONSE_OVERRIDES.items():
        if param in call.query:
            headers[header] = call.query[param]
    headers["Content-Length"] = str(stop - start)
    if head_only:
        return Response(iter(()), status=status, headers=headers, direct_passthrough=True)
    body: Iterator[bytes] = call.names.read(info, start, stop) if stop > start else iter(())
    return Response(stream_with_context(body), status=status, headers=headers, direct_passthrough=True)


def head_object(call: S3Call) -> Response:
    return get_object(call, head_only=True)


def _receive(reader, attrs: ObjectAttributes):
    """The body's pieces; at their end the verified checksum joins the object's attributes."""
    yield from reader
    attrs.checksum = checksum_of(reader)


def put_object(call: S3Call) -> Response:
    if call.header("x-amz-copy-source") is not None:
        return copy_object(call)
    key = valid_key(call.key)
    condition = write_condition(call)
    attrs = object_attributes(call)
    attrs.tags = header_tags(call)  # InvalidTag before the body is read
    attrs.acl = request_acl_doc(call, call.tenant)
    header_lock(call, attrs)  # x-amz-object-lock-*: refused before the body is read
    reader = call.upload_body()
    # the condition is checked before the body is read and, as a compare-and-set, when the name is written
    info, f = call.names.put(call.tenant, call.bucket, key, _receive(reader, attrs), attrs,
                             request_id=call.request_id, size_hint=reader.length, condition=condition)
    call.enqueue(f.id, call.request_id, small=f.chunk_count <= 1)
    headers = {"ETag": quote_etag(info.etag), **checksum_header(info.checksum), **write_version_headers(call, info),
               **expiration_header(call, info)}
    if info.checksum:
        headers["x-amz-checksum-type"] = checksum_type_of(info.checksum)
    return empty_answer(200, headers)


def delete_object(call: S3Call) -> Response:
    removed = call.names.remove(call.tenant, call.bucket, call.key, check_version(call),
                                bypass_governance(call, call.key))
    headers = {}
    if removed.version_id is not None:
        headers["x-amz-version-id"] = removed.version_id
    if removed.delete_marker:
        headers["x-amz-delete-marker"] = "true"
    return empty_answer(204, headers)


def delete_objects(call: S3Call) -> Response:
    request = parse_delete(call.small_body(MAX_DELETE_XML))
    call.names.bucket(call.tenant, call.bucket)  # an unknown bucket fails the whole call
    deleted: list = []
    errors: list[DeleteError] = []
    versions = request.versions or [None] * len(request.keys)
    for key, version in zip(request.keys, versions):
        try:
            require(call, "s3:DeleteObject", call.bucket, key)  # each key on its own, as S3
        except AccessDenied as err:
            errors.append(DeleteError(key, err.code, err.message))
            continue
        try:
            removed = call.names.remove(call.tenant, call.bucket, valid_key(key), version,
                                        bypass_governance(call, key))
            if version is None and removed.version_id is None:
                deleted.append(key)
            elif version is None:
                deleted.append(DeletedEntry(key, None, removed.delete_marker, removed.version_id))
            else:
                deleted.append(DeletedEntry(key, version, removed.delete_marker,
                                            version if removed.delete_marker else None))
        except StoreError as exc:
            err = s3_error_for(exc)
            errors.append(DeleteError(key, err.code, err.message, version))
    return xml_answer(delete_result_xml(deleted, errors, quiet=request.quiet))


def copy_source(call: S3Call) -> tuple[str, str]:
    """(bucket, key) of ``x-amz-copy-source``: ``[/]bucket/key[?versionId=...]``, URL-encoded."""
    return copy_source_version(call)[:2]


def copy_source_version(call: S3Call) -> tuple[str, str, str | None]:
    """(bucket, key, version id or None) of ``x-amz-copy-source``."""
    raw = call.header("x-amz-copy-source") or ""
    path, _, query = raw.partition("?")
    version = None
    if query:
        name, _, value = query.partition("=")
        if name != "versionId":
            raise InvalidArgument("Invalid version id specified", ArgumentName="x-amz-copy-source")
        version = value or None
    try:
        path = unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        path = ""
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket or not key:
        raise InvalidArgument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
                              ArgumentName="x-amz-copy-source", ArgumentValue=raw)
    return bucket, key, version


def copy_object(call: S3Call) -> Response:
    key = valid_key(call.key)
    src_bucket, src_key, src_version = copy_source_version(call)
    directive = (call.header("x-amz-metadata-directive") or "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise InvalidArgument("Unknown metadata directive.", ArgumentName="x-amz-metadata-directive",
                              ArgumentValue=directive)
    tagging = (call.header("x-amz-tagging-directive") or "COPY").upper()
    if tagging not in ("COPY", "REPLACE"):
        raise InvalidArgument("Unknown tagging directive.", ArgumentName="x-amz-tagging-directive",
                              ArgumentValue=tagging)
    tags = header_tags(call) if tagging == "REPLACE" else None
    retention, legal_hold = header_lock(call)  # the copy's own, never the source's
    src_owner = require(call, "s3:GetObject", src_bucket, src_key)  # the destination was authorized with the call
    src = call.names.head(src_owner, src_bucket, src_key, src_version)
    check_preconditions(call, src, prefix="x-amz-copy-source-")
    if (src_bucket, src_key) == (call.bucket, key) and directive == "COPY" and src_version is None \
            and call.header("x-amz-storage-class") is None:
        raise InvalidRequest("This copy request is illegal because it is trying to copy an object to itself "
                             "without changing the object's metadata, storage class, website redirect location "
                             "or encryption attributes.")
    attrs = None
    if directive == "REPLACE":
        attrs = object_attributes(call)
        attrs.checksum = src.checksum  # the same bytes
    if tagging == "REPLACE" or attrs is not None:  # the tags follow their own directive
        attrs = attrs or ObjectAttributes(src.content_type, dict(src.metadata), dict(src.headers), src.checksum)
        attrs.tags = tags if tagging == "REPLACE" else [list(t) for t in src.tags] or None
    if attrs is not None:
        attrs.acl = None  # the copy's ACL is its request's, never the source's
    info = call.names.copy(call.tenant, src_bucket, src_key, call.bucket, key, attrs,
                           condition=write_condition(call), src_version=src_version,
                           acl=request_acl_doc(call, call.tenant), src_tenant=src_owner,
                           retention=retention, legal_hold=legal_hold)
    headers = write_version_headers(call, info)
    if src.version_id:
        headers["x-amz-copy-source-version-id"] = src.version_id
    return xml_answer(copy_object_xml(info.etag, info.last_modified, checksum_elements(info.checksum)),
                      headers=headers)


def object_location(call: S3Call, key: str) -> str:
    return f"http://{call.host}/{quote(call.bucket)}/{quote(key)}"


OBJECT_ATTRIBUTES = {"etag": "ETag", "checksum": "Checksum", "objectparts": "ObjectParts",
                     "storageclass": "StorageClass", "objectsize": "ObjectSize"}


def get_object_attributes(call: S3Call) -> Response:
    """GetObjectAttributes: what ``x-amz-object-attributes`` names, in one XML answer."""
    version = check_version(call)
    wanted = set()
    for name in (call.header("x-amz-object-attributes") or "").split(","):
        if not name.strip():
            continue
        canonical = OBJECT_ATTRIBUTES.get(name.strip().lower())
        if canonical is None:
            raise InvalidArgument("Invalid attribute name specified.", ArgumentName="x-amz-object-attributes",
                                  ArgumentValue=name.strip())
        wanted.add(canonical)
    if not wanted:
        raise InvalidRequest("The x-amz-object-attributes header specifying the attributes to be retrieved "
                             "is either missing or empty")
    info = call.names.head(call.tenant, call.bucket, call.key, version)
    parts = None
    if "ObjectParts" in wanted and info.part_sizes:
        parts = _object_parts(call, info)
    checksum = None
    if "Checksum" in wanted and info.checksum:
        checksum = ({info.checksum["algorithm"]: info.checksum["value"]}, checksum_type_of(info.checksum))
    return xml_answer(object_attributes_xml(
        etag=strip_etag(info.etag) if "ETag" in wanted else None, checksum=checksum, parts=parts,
        storage_class="STANDARD" if "StorageClass" in wanted else None,
        size=info.size if "ObjectSize" in wanted else None),
        headers={"Last-Modified": to_http_date(info.last_modified), **version_headers(info)})


def _header_int(call: S3Call, name: str, default: int, high: int) -> int:
    """An integer request header; an unreadable or negative value is ignored, as S3 does."""
    raw = call.header(name)
    if raw is None or not raw.isdigit():
        return default
    return min(int(raw), high)


def _object_parts(call: S3Call, info: ObjectInfo) -> ObjectPartsPage:
    marker = _header_int(call, "x-amz-part-number-marker", 0, 10_000)
    max_parts = _header_int(call, "x-amz-max-parts", 1000, 1000)
    algorithm = info.checksum["algorithm"] if info.checksum else None
    sums = info.part_checksums or []
    numbers = range(marker + 1, len(info.part_sizes) + 1)
    shown = list(numbers)[:max_parts]
    entries = [ObjectPartEntry(n, info.part_sizes[n - 1],
                               {algorithm: sums[n - 1]} if algorithm and n <= len(sums) and sums[n - 1] else {})
               for n in shown]
    truncated = len(numbers) > len(shown)
    return ObjectPartsPage(entries, total=len(info.part_sizes), marker=marker, max_parts=max_parts,
                           next_marker=shown[-1] if shown else marker, truncated=truncated)
