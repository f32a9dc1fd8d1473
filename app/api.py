"""HTTP routes: each one parses the request, calls the object store, shapes the answer."""
from __future__ import annotations

import logging
import re
from urllib.parse import quote

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context
from werkzeug.http import parse_range_header

from app.auth import is_operator
from app.multipart import ClientGone, FilePart, discard_rest
from pipeline.datapath.chunkmap import chunk_page
from pipeline.errors import (BadRequest, Forbidden, InsufficientStorage, MalformedUpload, RangeNotSatisfiable,
                             StoreError, UploadTooLarge)
from pipeline.metadata.model import FileDoc, parse_file_id
from pipeline.namespace.names import valid_key
from pipeline.namespace.objects import ObjectNames

log = logging.getLogger(__name__)

api = Blueprint("api", __name__, url_prefix="/api")

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LIST_LIMIT = 1000
MAX_CHUNKS_LIMIT = 200
MAX_SEARCH_CHARS = 256
HISTORY_WINDOW_S = (60, 7200)


def store():
    return current_app.extensions["minis3.store"]


def names() -> ObjectNames:
    return current_app.extensions["minis3.names"]


def tenant() -> str:
    return g.tenant


def status_json(f: FileDoc) -> dict:
    return {
        "fileId": f.id, "status": f.status,
        "progress": {"chunksDone": f.chunks_done, "chunksTotal": f.chunk_count},
        "error": f.error,
    }


@api.post("/upload")
def upload():
    limit = current_app.config["MINIS3_SETTINGS"].max_upload_bytes
    if limit and request.content_length is not None and request.content_length > limit:
        raise UploadTooLarge(f"upload of {request.content_length} bytes exceeds the limit of {limit} bytes")
    bucket, key = request.args.get("bucket"), request.args.get("key")
    try:  # before the body: a name that cannot be given costs nothing
        if (bucket is None) != (key is None):
            raise BadRequest("give both bucket and key, or neither")
        if bucket is not None:
            names().bucket(tenant(), bucket)
            valid_key(key)
    except StoreError:
        discard_rest(request.stream)  # a client still sending then reads the answer, not a reset
        raise
    try:
        part = FilePart(request.stream, request.content_type)
        f = store().receive(tenant(), part.filename, part.content_type, part, request_id=g.request_id,
                            md5=bucket is not None, size_hint=request.content_length)  # the form's, at least the file's
    except MalformedUpload as exc:
        if not isinstance(exc, ClientGone):
            discard_rest(request.stream)
        raise
    g.upload_bytes = f.size  # counted by app.metrics
    if bucket is not None:
        names().name_file(tenant(), f, bucket, key, f.content_type)
    current_app.extensions["minis3.enqueue"](f.id, g.request_id, small=f.chunk_count <= 1)
    if request.args.get("wait") in ("1", "true", "yes"):
        final = store().wait_until_final(f.id, current_app.config["MINIS3_SETTINGS"].wait_timeout_s)
        if final is not None and final.status == "stored":
            return jsonify({"success": True, **final.to_json(), "statusUrl": f"/api/files/{f.id}/status"}), 201
        if final is not None and final.error_code == InsufficientStorage.code:
            raise InsufficientStorage("no space left on a storage node; the upload was not stored", fileId=f.id)
        f = final or f
    body = {"success": True, "fileId": f.id, "status": f.status, "statusUrl": f"/api/files/{f.id}/status",
            "size": f.size, "sha256": f.sha256}
    return jsonify(body), 202


@api.get("/files/<file_id>/status")
def file_status(file_id: str):
    return jsonify(status_json(store().get(tenant(), file_id)))


def int_arg(name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(request.args.get(name, default))
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


@api.get("/files")
def list_files():
    """Newest first; ``q`` searches by name prefix, ``bucket/key`` prefix or SHA-256 prefix."""
    limit = int_arg("limit", 50, 1, MAX_LIST_LIMIT)
    cursor = request.args.get("cursor") or None
    if cursor is not None:
        parse_file_id(cursor)
    q = request.args.get("q", "").strip() or None
    if q is not None and (len(q) > MAX_SEARCH_CHARS or _CONTROL.search(q)):
        raise BadRequest(f"q must be at most {MAX_SEARCH_CHARS} characters, none of them a control character")
    files, next_cursor = store().list(tenant(), limit, cursor, q)
    return jsonify({"files": [f.to_json() for f in files], "nextCursor": next_cursor})


@api.get("/files/<file_id>/chunks")
def file_chunks(file_id: str):
    """A page of a file's chunks: where each is kept and how many files share it (the caller's
    own files; every tenant's for an admin key)."""
    f = store().get(tenant(), file_id)
    limit = int_arg("limit", 50, 1, MAX_CHUNKS_LIMIT)
    raw = request.args.get("cursor") or "0"
    if not raw.isdigit() or len(raw) > 12:
        raise BadRequest("cursor must be a chunk index (the nextCursor of the previous page)")
    scope = None if is_operator() else tenant()
    return jsonify(chunk_page(store().meta, f, int(raw), limit, tenant(), scope))


@api.get("/files/<file_id>")
def download(file_id: str):
    return send_stored(store().get_readable(tenant(), file_id))


@api.get("/files/by-hash/<sha256>")
def download_by_hash(sha256: str):
    if not _SHA256.match(sha256):
        raise BadRequest("expected a SHA-256 as 64 hexadecimal characters")
    return send_stored(store().get_by_hash(tenant(), sha256))


@api.delete("/files/<file_id>")
def delete_file(file_id: str):
    store().delete(tenant(), file_id)
    return Response(status=204)


def _sees_store_detail() -> bool:
    try:
        return is_operator()
    except Exception:  # the keys cannot be checked (MongoDB down): health still answers, without detail
        return False


@api.get("/health")
def health():
    """Readiness for anyone; each node's free space and path only for operators: free space moves
    when new chunks are written and not when content is deduplicated, so a tenant that watched it
    would learn whether someone else stores what it uploaded."""
    report = store().health()
    if not _sees_store_detail():
        report["nodes"] = [{"node": n["node"], "ok": n["ok"]} for n in report["nodes"]]
    response = jsonify({"success": report["ok"], **report})
    if not report["ok"]:
        response.status_code = 503
        response.headers["Retry-After"] = "5"
    return response


@api.get("/stats")
def stats():
    """Store-wide for operators; any other key gets its own tenant's figures (pipeline.maintenance.stats)."""
    if is_operator():
        figures = store().stats().of_store(current_app.extensions["minis3.queue_depth"])
        own = next((u for u in figures["tenants"] if u["tenant"] == tenant()), None)
        return jsonify({"success": True, **figures, "tenant": tenant(), "usage": own})
    return jsonify({"success": True, **store().stats().of_tenant(tenant())})


@api.get("/stats/history")
def stats_history():
    """The store's figures over time and the periodic jobs' runs: an operator's view."""
    if not is_operator():
        raise Forbidden("the store's history needs an admin key (minis3 keys create --tenant NAME --admin)")
    window = int_arg("window", 3600, *HISTORY_WINDOW_S)
    return jsonify({"success": True, **store().usage().history(float(window))})


def content_disposition(name: str) -> str:
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in name) or "file"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def send_stored(f: FileDoc) -> Response:
    etag = f'"{f.etag}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(f.name),
        "Cache-Control": "private, no-cache",
    }
    if etag in [t.strip() for t in request.headers.get("If-None-Match", "").split(",")]:
        return Response(status=304, headers=headers)
    start, stop, status = 0, f.size, 200
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if range_header and (if_range is None or if_range.strip() == etag):
        rng = parse_range_header(range_header)
        if rng is not None and rng.units == "bytes" and len(rng.ranges) == 1:
            span = rng.range_for_length(f.size)
            if span is None:
                raise _unsatisfiable(f.size)
            start, stop = span
            status = 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{f.size}"
    body = store().read(f, start, stop) if stop > start else iter(())
    headers["Content-Length"] = str(stop - start)
    response = Response(stream_with_context(body), status=status, headers=headers, mimetype=f.content_type,
                        direct_passthrough=True)
    response.headers["Content-Type"] = f.content_type
    return response


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(f"the file has {size} bytes", contentRange=f"bytes */{size}")

