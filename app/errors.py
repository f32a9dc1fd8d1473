"""The one place that maps domain errors and backing-service failures to HTTP answers."""
from __future__ import annotations

import logging

import pymongo.errors
import redis
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from pipeline.errors import ServiceUnavailable, StoreError

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


def store_error_response(exc: StoreError):
    extra = {k: v for k, v in exc.details.items() if isinstance(v, (str, int, float, bool, type(None)))}
    response = error_response(exc.status, exc.code, exc.message, exc.retry_after, extra)
    if "contentRange" in extra:
        response.headers["Content-Range"] = extra["contentRange"]
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(StoreError)
    def _store_error(exc: StoreError):
        if exc.status >= 500:
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

    @app.errorhandler(pymongo.errors.PyMongoError)
    def _mongo_error(exc):
        log.warning("metadata store error: %r", exc)
        return store_error_response(ServiceUnavailable("metadata store unavailable"))

    @app.errorhandler(redis.RedisError)
    def _redis_error(exc):
        log.warning("redis error: %r", exc)
        return store_error_response(ServiceUnavailable("queue/cache service unavailable"))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unexpected error")
        return error_response(500, "internal_error", "internal error")
