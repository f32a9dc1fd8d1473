"""The one place that maps domain errors and backing-service failures to HTTP answers."""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from pipeline.errors import StoreError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 408: "request_timeout", 409: "conflict", 411: "length_required",
    413: "too_large", 414: "uri_too_long", 415: "unsupported_media_type", 416: "range_not_satisfiable",
    429: "rate_limited", 431: "headers_too_large",
}


def error_response(status: int, code: str, message: str, retry_after: int | None = None,
                   extra: dict | None = None):
    body = {"success": False, "error": {"code": code, "message": message, **(extra or {})}}
    response = jsonify(body)
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


# The one table from domain error codes to /api statuses. A code not listed takes its nearest
# listed ancestor's status (a new kind of BadRequest is a 400).
API_STATUS = {
    "bad_request": 400, "unauthorized": 401, "forbidden": 403, "not_found": 404, "not_ready": 409,
    "bucket_exists": 409, "bucket_not_empty": 409, "invalid_bucket_state": 409, "precondition_failed": 412, "too_large": 413,
    "range_not_satisfiable": 416, "internal_error": 500, "chunk_unavailable": 500,
    "service_unavailable": 503, "chunk_busy": 503, "not_enough_fragments": 503,
    "node_unavailable": 503, "nodes_unavailable": 503, "insufficient_storage": 507,
}


def api_status(exc: StoreError) -> int:
    for cls in type(exc).__mro__:
        status = API_STATUS.get(getattr(cls, "code", None))
        if status is not None:
            return status
    return 500


def store_error_response(exc: StoreError):
    extra = {k: v for k, v in exc.details.items() if isinstance(v, (str, int, float, bool, type(None)))}
    response = error_response(api_status(exc), exc.code, exc.message, exc.retry_after, extra)
    if "contentRange" in extra:
        response.headers["Content-Range"] = extra["contentRange"]
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(StoreError)
    def _store_error(exc: StoreError):
        if api_status(exc) >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        return store_error_response(exc)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        retry_after = None
        if status == 429:
            retry_after = int(getattr(exc, "retry_after", None) or 60)
        response = error_response(status, _HTTP_CODES.get(status, "error"), exc.description or exc.name,
                                  retry_after)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response


    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error")
        return error_response(500, "internal_error", "internal error")
