"""Multipart uploads: Create, UploadPart, UploadPartCopy, ListParts, ListMultipartUploads, Abort,
Complete. Parts are files of their own, chunked as they arrive and kept in the spool; completion
concatenates their manifests and hard-links their spooled chunks into the object's file, which is
then ingested (deduplicated and placed) once: no data byte moves, and no part is ingested only to
be composed.
"""
from __future__ import annotations

import re

from flask import Response

from app.s3.errors import InvalidArgument, InvalidRange, InvalidRequest
from app.s3.objects import (check_preconditions, checksum_header, checksum_of, copy_source, object_location)
from app.s3.request import S3Call, empty_answer, object_attributes, xml_answer
from app.s3.xmlio import (MAX_COMPLETE_XML, MAX_PART_NUMBER, PartEntry, UploadEntry, check_encoding_type,
                          complete_multipart_xml, copy_part_xml, initiate_multipart_xml, list_parts_xml,
                          list_uploads_xml, parse_complete_multipart, quote_etag)
from pipeline.names import valid_key

_COPY_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


def create_upload(call: S3Call) -> Response:
    key = valid_key(call.key)
    upload = call.names.create_upload(call.tenant, call.bucket, key, object_attributes(call))
    headers = {}
    algorithm = call.header("x-amz-checksum-algorithm")
    if algorithm:
        headers["x-amz-checksum-algorithm"] = algorithm.upper()
    return xml_answer(initiate_multipart_xml(call.bucket, key, upload.upload_id), headers=headers)


def _part_number(call: S3Call) -> int:
    if "partNumber" not in call.query:
        raise InvalidRequest("An uploadId on a PUT needs a partNumber")
    return call.int_param("partNumber", 0, 1, MAX_PART_NUMBER)


def upload_part(call: S3Call) -> Response:
    if call.header("x-amz-copy-source") is not None:
        return upload_part_copy(call)
    number = _part_number(call)
    reader = call.body()
    checksum: dict = {}  # filled in when the body ends, before the part is recorded

    def pieces():
        yield from reader
        checksum.update(checksum_of(reader) or {})

    part, _ = call.names.put_part(call.tenant, call.bucket, call.key, call.query["uploadId"], number, pieces(),
                                  checksum=checksum, request_id=call.request_id)
    return empty_answer(200, {"ETag": quote_etag(part.etag), **checksum_header(part.checksum)})


def upload_part_copy(call: S3Call) -> Response:
    """The source's bytes (or the x-amz-copy-source-range of them) streamed through a new part."""
    number = _part_number(call)
    call.names.upload(call.tenant, call.bucket, call.key, call.query["uploadId"])  # before any byte moves
    src_bucket, src_key = copy_source(call)
    src = call.names.head(call.tenant, src_bucket, src_key)
    check_preconditions(call, src, prefix="x-amz-copy-source-")
    start, stop = 0, src.size
    wanted = call.header("x-amz-copy-source-range")
    if wanted:
        match = _COPY_RANGE.fullmatch(wanted.replace(" ", ""))
        if match is None:
            raise InvalidArgument("The x-amz-copy-source-range value must be of the form bytes=first-last where "
                                  "first and last are the zero-based offsets of the first and last bytes to copy",
                                  ArgumentName="x-amz-copy-source-range", ArgumentValue=wanted)
        first, last = int(match.group(1)), int(match.group(2))
        if first > last or last >= src.size:
            raise InvalidRange("The requested range is not satisfiable", RangeRequested=wanted,
                               ActualObjectSize=str(src.size))
        start, stop = first, last + 1
    pieces = call.names.read(src, start, stop) if stop > start else iter(())
    part, _ = call.names.put_part(call.tenant, call.bucket, call.key, call.query["uploadId"], number, pieces,
                                  request_id=call.request_id)
    return xml_answer(copy_part_xml(part.etag, part.last_modified))


def list_parts(call: S3Call) -> Response:
    upload = call.names.upload(call.tenant, call.bucket, call.key, call.query["uploadId"])
    marker = call.int_param("part-number-marker", 0, 0, MAX_PART_NUMBER)
    max_parts = call.int_param("max-parts", 1000, 0, 1000, clamp=True)
    parts = call.names.parts(upload, marker, max_parts + 1)
    truncated = len(parts) > max_parts
    parts = parts[:max_parts]
    entries = [PartEntry(p.number, p.last_modified, p.etag, p.size,
                         {p.checksum["algorithm"]: p.checksum["value"]} if p.checksum else {}) for p in parts]
    return xml_answer(list_parts_xml(
        call.bucket, upload.key, upload.upload_id, entries, part_number_marker=marker,
        next_part_number_marker=parts[-1].number if parts else None, max_parts=max_parts,
        is_truncated=truncated, owner=call.owner))


def list_uploads(call: S3Call) -> Response:
    encoding = check_encoding_type(call.query.get("encoding-type"))
    prefix = call.query.get("prefix", "")
    delimiter = call.query.get("delimiter") or None
    key_marker = call.query.get("key-marker", "")
    upload_id_marker = call.query.get("upload-id-marker", "")
    max_uploads = call.int_param("max-uploads", 1000, 0, 1000, clamp=True)
    # an upload-id-marker without a key-marker is ignored, as AWS
    page = call.names.list_uploads(call.tenant, call.bucket, prefix, delimiter or "", key_marker or None,
                                   upload_id_marker if key_marker else None, max_uploads)
    entries = [UploadEntry(u.key, u.upload_id, u.created) for u in page.uploads]
    return xml_answer(list_uploads_xml(
        call.bucket, entries, page.prefixes, prefix=prefix, delimiter=delimiter, key_marker=key_marker,
        upload_id_marker=upload_id_marker, next_key_marker=page.next_key_marker,
        next_upload_id_marker=page.next_upload_id_marker, max_uploads=max_uploads, is_truncated=page.truncated,
        encoding_type=encoding, owner=call.owner))


def abort_upload(call: S3Call) -> Response:
    call.names.abort(call.tenant, call.bucket, call.key, call.query["uploadId"])
    return empty_answer(204)


def complete_upload(call: S3Call) -> Response:
    parts = parse_complete_multipart(call.small_body(MAX_COMPLETE_XML))
    info = call.names.complete(call.tenant, call.bucket, call.key, call.query["uploadId"],
                               [(p.part_number, p.etag) for p in parts])
    return xml_answer(complete_multipart_xml(object_location(call, info.key), call.bucket, info.key, info.etag),
                      headers={"ETag": quote_etag(info.etag)})
