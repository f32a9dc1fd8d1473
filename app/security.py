"""Secure response headers, CORS, proxy trust and rate limits (stored in Redis) for the web app.

Order of the request hooks: identify the caller (app.auth), apply the rate limit keyed by that
identity, then refuse callers without a valid key. Every answer, errors included, leaves with
the secure headers below.
"""
from __future__ import annotations

import logging
import time

from flask import Flask, g, request
from flask_cors import CORS
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from limits import parse_many
from werkzeug.middleware.proxy_fix import ProxyFix

from app import auth
from app.errors import error_response
from config.settings import Settings, SettingsError

log = logging.getLogger(__name__)

# what helmet sets for an API that never serves a page
SECURE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "X-Permitted-Cross-Domain-Policies": "none",
    "X-DNS-Prefetch-Control": "off",
    "Origin-Agent-Cluster": "?1",
    "X-XSS-Protection": "0",
}
HSTS = "max-age=31536000; includeSubDomains"

CORS_ALLOW_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "Range", "If-None-Match", "If-Range",
                      "X-Request-ID"]
CORS_EXPOSE_HEADERS = ["ETag", "Content-Range", "Content-Disposition", "Content-Length", "Accept-Ranges",
                       "Retry-After", "X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                       "X-RateLimit-Reset"]

UNLIMITED_ENDPOINTS = frozenset({"api.health"})
LIMITED_BLUEPRINTS = frozenset({"api"})
FALLBACK_RETRY_AFTER_S = 60


def secure_headers(response):
    for name, value in SECURE_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:  # https, as seen directly or through a trusted proxy's X-Forwarded-Proto
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    response.headers.pop("Server", None)
    if response.status_code not in (429, 503):  # the limiter adds it to every answer; it means "wait"
        response.headers.pop("Retry-After", None)
    return response


def rate_limit_key() -> str:
    """Per API key when the caller sent a valid one, else per client address."""
    key = g.get("api_key")
    if key is not None:
        return f"key:{key.id}"
    return f"addr:{request.remote_addr or 'unknown'}"


def not_limited() -> bool:
    return (request.method == "OPTIONS" or request.blueprint not in LIMITED_BLUEPRINTS
            or request.endpoint in UNLIMITED_ENDPOINTS)


def make_limiter(app: Flask, settings: Settings) -> Limiter:
    """A limiter shared by all workers and hosts through Redis; a Redis outage never fails a request:
    each process then counts in memory until Redis is back."""
    try:
        parse_many(settings.rate_limit)
    except ValueError:
        raise SettingsError(f"MINIS3_RATE_LIMIT: cannot read {settings.rate_limit!r} "
                            "(try '100 per 15 minutes', or '' to disable)") from None
    limiter = Limiter(
        key_func=rate_limit_key,
        application_limits=[settings.rate_limit],
        storage_uri=settings.redis_url or "memory://",
        storage_options={"socket_connect_timeout": 2, "socket_timeout": 2} if settings.redis_url else {},
        strategy="moving-window",  # no window edge: a burst across a boundary cannot get twice the limit
        key_prefix="minis3:ratelimit",
        headers_enabled=True,
        swallow_errors=True,
        in_memory_fallback_enabled=True,
    )
    limiter.request_filter(not_limited)
    limiter.init_app(app)

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(exc: RateLimitExceeded):
        retry_after = FALLBACK_RETRY_AFTER_S
        try:
            current = limiter.current_limit
            if current is not None:
                retry_after = max(1, int(current.reset_at - time.time()) + 1)
        except Exception:  # storage gone between the hit and now: a conservative hint
            pass
        return error_response(429, "rate_limited", f"rate limit exceeded: {exc.description}", retry_after)

    return limiter


def init_security(app: Flask, settings: Settings) -> None:
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=0, x_port=0, x_prefix=0)
    app.after_request(secure_headers)  # registered first, so it runs last, after the limiter's hook
    auth.init_identify(app, settings)
    if settings.rate_limit:
        app.extensions["minis3.limiter"] = make_limiter(app, settings)
    auth.init_enforce(app)
    if settings.cors_origins:
        CORS(app, resources={r"/api/*": {"origins": list(settings.cors_origins)}},
             methods=["GET", "HEAD", "POST", "DELETE", "OPTIONS"], allow_headers=CORS_ALLOW_HEADERS,
             expose_headers=CORS_EXPOSE_HEADERS, max_age=600, supports_credentials=False)
