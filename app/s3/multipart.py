"""Multipart uploads: Create, UploadPart, UploadPartCopy, ListParts, ListMultipartUploads, Abort,
Complete. Parts are files of their own, chunked as they arrive and kept in the spool; completion
concatenates their manifests and hard-links their spooled chunks into the object's file, which is
then ingested (deduplicated and placed) once: no data byte moves, and no part is ingested only to
be composed.
"""
from __future__ import annotations

import re

from flask import Response
from werkzeug.datastructures import Headers

from app.s3 import checksums
from app.s3.access import request_acl_doc, require
from app.s3.errors import (BadDigest, InvalidArgument, InvalidPart, InvalidPartOrder, InvalidRange, S3Error,
                           InvalidRequest)
from app.s3.objects import (check_preconditions, checksum_header, checksum_of, copy_source_version, object_location,
                            write_condition, write_version_headers)
from app.s3.payload import PayloadReader
from app.s3.lock import header_lock
from app.s3.tagging import header_tags
from app.s3.request import S3Call, empty_answer, object_attributes, xml_answer
from app.s3.xmlio import (MAX_COMPLETE_XML, MAX_PART_NUMBER, CompletedPart, Owner, PartEntry, UploadEntry,
                          check_encoding_type, complete_multipart_checksum_xml, complete_multipart_xml,
                          copy_part_xml, initiate_multipart_xml, list_parts_xml, list_uploads_xml,
                          parse_complete_multipart, quote_etag, read_limited)
from pipeline.namespace.names import valid_key
from pipeline.namespace.objects import Part, Upload

_COPY_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


def create_upload(call: S3Call) -> Response:
    key = valid_key(call.key)
    algorithm, kind = checksums.upload_checksum(call.header("x-amz-checksum-algorithm"),
                                                call.header("x-amz-checksum-type"))
    attrs = object_attributes(call)
    attrs.tags = header_tags(call)  # applied to the object at completion
    attrs.acl = request_acl_doc(call, call.tenant)  # so is the ACL
    header_lock(call, attrs)  # and the object lock's retention and legal hold
    upload = call.names.create_upload(call.tenant, call.bucket, key, attrs, algorithm, kind)
    headers = {}
    if algorithm:
        headers.update({"x-amz-checksum-algorithm": algorithm, "x-amz-checksum-type": kind})
    return xml_answer(initiate_multipart_xml(call.bucket, key, upload.upload_id), headers=headers)


def _part_checksum(call: S3Call, upload: Upload) -> checksums.Checksum | None:
    """The checksum the server computes of a part whose upload has an algorithm and whose request
    carries none; InvalidRequest when the request names another algorithm."""
    if upload.checksum_algorithm is None:
        return None
    sent = checksums.requested(call.headers)
    if sent is None:
        return checksums.Checksum(upload.checksum_algorithm)
    if sent.algorithm != upload.checksum_algorithm:
        raise InvalidRequest(f"Checksum Type mismatch occurred, expected checksum Type: "
                             f"{upload.checksum_algorithm.lower()}, actual checksum Type: {sent.algorithm.lower()}")
    return None


def _part_number(call: S3Call) -> int:
    if "partNumber" not in call.query:
        raise InvalidRequest("An uploadId on a PUT needs a partNumber")
    return call.int_param("partNumber", 0, 1, MAX_PART_NUMBER)


def upload_part(call: S3Call) -> Response:
    if call.header("x-amz-copy-source") is not None:
        return upload_part_copy(call)
    number = _part_number(call)
    upload = call.names.upload(call.tenant, call.bucket, call.key, call.query["uploadId"])
    own = _part_checksum(call, upload)
    reader = call.upload_body()
    checksum: dict = {}  # filled in when the body ends, before the part is recorded

    def pieces():
        for piece in reader:
            if own is not None:
                own.update(piece)
            yield piece
        checksum.update(checksum_of(reader) or ({"algorithm": own.algorithm, "value": own.b64()} if own else {}))

    part, _ = call.names.put_part(call.tenant, call.bucket, call.key, call.query["uploadId"], number, pieces(),
                                  checksum=checksum, request_id=call.request_id)
    return empty_answer(200, {"ETag": quote_etag(part.etag), **checksum_header(part.checksum)})


def upload_part_copy(call: S3Call) -> Response:
    """The source's bytes (or the x-amz-copy-source-range of them) streamed through a new part."""
    number = _part_number(call)
    upload = call.names.upload(call.tenant, call.bucket, call.key, call.query["uploadId"])  # before any byte moves
    src_bucket, src_key, src_version = copy_source_version(call)
    src_owner = require(call, "s3:GetObject", src_bucket, src_key)  # the destination was authorized with the call
    src = call.names.head(src_owner, src_bucket, src_key, src_version)
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
    source = call.names.read(src, start, stop) if stop > start else iter(())
    own = checksums.Checksum(upload.checksum_algorithm) if upload.checksum_algorithm else None
    checksum: dict = {}

    def pieces():
        for piece in source:
            if own is not None:
                own.update(piece)
            yield piece
        if own is not None:
            checksum.update(algorithm=own.algorithm, value=own.b64())

    part, _ = call.names.put_part(call.tenant, call.bucket, call.key, call.query["uploadId"], number, pieces(),
                                  checksum=checksum, request_id=call.request_id)
    sums = {part.checksum["algorithm"]: part.checksum["value"]} if part.checksum else None
    return xml_answer(copy_part_xml(part.etag, part.last_modified, sums))


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
        is_truncated=truncated, owner=upload_initiator(upload) or call.owner))


def upload_initiator(upload) -> Owner | None:
    """The tenant that created an upload: the owner of the ACL it was created with."""
    owner = (upload.attributes.get("acl") or {}).get("owner")
    return Owner(owner, owner) if owner else None


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
    entries = [UploadEntry(u.key, u.upload_id, u.created, initiator=upload_initiator(u)) for u in page.uploads]
    return xml_answer(list_uploads_xml(
        call.bucket, entries, page.prefixes, prefix=prefix, delimiter=delimiter, key_marker=key_marker,
        upload_id_marker=upload_id_marker, next_key_marker=page.next_key_marker,
        next_upload_id_marker=page.next_upload_id_marker, max_uploads=max_uploads, is_truncated=page.truncated,
        encoding_type=encoding, owner=call.owner))


def abort_upload(call: S3Call) -> Response:
    call.names.abort(call.tenant, call.bucket, call.key, call.query["uploadId"])
    return empty_answer(204)


def complete_upload(call: S3Call) -> Response:
    # x-amz-checksum-* headers of a completion are the whole object's checksum, not the XML body's
    body_headers = Headers([(k, v) for k, v in call.headers.items()
                            if not k.lower().startswith(checksums.HEADER_PREFIX)])
    parts = parse_complete_multipart(read_limited(PayloadReader(call.stream, body_headers, call.auth),
                                                  MAX_COMPLETE_XML))
    whole = checksums.value_header(call.headers)

    def checksum_of_parts(upload: Upload, chosen: list[Part]) -> dict | None:
        return object_checksum(upload, parts, chosen, whole, call.header("x-amz-checksum-type"))

    info = call.names.complete(call.tenant, call.bucket, call.key, call.query["uploadId"],
                               [(p.part_number, p.etag) for p in parts], condition=write_condition(call),
                               checksum_of=checksum_of_parts)
    location = object_location(call, info.key)
    if info.checksum:
        body = complete_multipart_checksum_xml(location, call.bucket, info.key, info.etag,
                                               {info.checksum["algorithm"]: info.checksum["value"]},
                                               info.checksum.get("type") or checksums.FULL_OBJECT)
    else:
        body = complete_multipart_xml(location, call.bucket, info.key, info.etag)
    return xml_answer(body, headers={"ETag": quote_etag(info.etag), **write_version_headers(call, info)})


def object_checksum(upload: Upload, sent: list[CompletedPart], chosen: list[Part], whole: tuple[str, str] | None,
                    checksum_type: str | None) -> dict | None:
    """The completed object's checksum, after checking what the client says: the part checksums
    listed in the XML (InvalidPart when one differs from the part's), the whole object's checksum
    header (BadDigest when it differs), the type (InvalidRequest when not the upload's)."""
    algorithm, kind = upload.checksum_algorithm, upload.checksum_type
    listed = {p.part_number: p.checksums for p in sent}
    for part in chosen:
        for name, value in listed.get(part.number, {}).items():
            stored = part.checksum
            if stored is None or stored["algorithm"] != name \
                    or checksums.decode_value(name, value) != checksums.decode_value(name, stored["value"]):
                raise InvalidPart(f"The {name.lower()} checksum of part {part.number} does not match the part's.",
                                  PartNumber=str(part.number))
    if algorithm is None:
        if whole is not None or checksum_type:
            raise InvalidRequest("The upload was created without a checksum algorithm: its completion cannot "
                                 "carry a checksum or a checksum type.")
        return None
    if checksum_type and checksum_type.strip().upper() != kind:
        raise InvalidRequest(f"The upload was created using the {kind} checksum mode. The complete request must "
                             "use the same checksum mode.")
    if [p.number for p in chosen] != list(range(1, len(chosen) + 1)):
        raise InvalidPartOrder("With a checksum algorithm the parts must be numbered from 1 without gaps.")
    digests = []
    for part in chosen:
        if part.checksum is None or part.checksum["algorithm"] != algorithm:
            raise InvalidPart(f"Part {part.number} has no {algorithm.lower()} checksum.", PartNumber=str(part.number))
        digests.append(checksums.decode_value(algorithm, part.checksum["value"]))
    if kind == checksums.COMPOSITE:
        value = checksums.composite(algorithm, digests)
    else:
        value = checksums.combine(algorithm, [(d, p.size) for d, p in zip(digests, chosen)])
    if whole is not None:  # a whole-object checksum that cannot match is BadDigest, before the list's checks
        name, given = whole
        if name != algorithm:
            raise InvalidRequest(f"The upload was created using a {algorithm.lower()} checksum; the complete request "
                                 f"carries a {name.lower()} checksum.")
        if not _same_checksum(algorithm, kind, given, value):
            raise BadDigest(f"The {algorithm.lower()} you specified for the whole object did not match the "
                            "calculated checksum.")
    # a part's checksum left out of the list is not required (CompletedPart: "Required: No"): the
    # one verified when the part arrived stands for it
    return {"algorithm": algorithm, "value": value, "type": kind}


def _same_checksum(algorithm: str, kind: str, given: str, value: str) -> bool:
    """Whether a whole-object checksum a client sent equals the computed one (a malformed value never does)."""
    given = given.strip()
    if kind == checksums.COMPOSITE:
        digest, _, count = given.partition("-")  # the -N suffix is optional in what a client sends
        return digest == value.partition("-")[0] and count in ("", value.partition("-")[2])
    try:
        return checksums.decode_value(algorithm, given) == checksums.decode_value(algorithm, value)
    except S3Error:
        return False
