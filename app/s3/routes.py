"""The S3 front end: a Flask app whose every request is one S3 call.

Routing is S3's, not Werkzeug's: the bucket and key come from the raw request path (gunicorn's
``RAW_URI``, percent-decoded once as UTF-8; never the normalised ``PATH_INFO``) or, when
``MINIS3_S3_DOMAIN`` is set, the bucket from the Host ``bucket.<domain>``. The operation is chosen
by method, level (service, bucket, object) and sub-resource query parameter from the tables
below; a sub-resource this store does not implement answers 501 NotImplemented.

Every signed request is authenticated with SigV4, then rate limited per access key, before it is
dispatched; unsigned requests and failed authentications are rate limited per client address
instead (app.s3.ratelimit). Then app.s3.access decides, once, whether the caller (a tenant, or
anonymous) may make the call (ACLs, bucket policy). Whatever refuses a request (authentication,
the rate limits, an unknown bucket, the permission check) does so before the first byte of its body is read, so that a client
waiting for ``100 Continue`` never sends it (app.s3.continuation). Every answer carries a request
id and the API's security headers; every failure is an S3 XML error (no body for HEAD).
"""
from __future__ import annotations

import logging
import re
import secrets
from typing import Callable
from urllib.parse import quote, unquote_to_bytes

from flask import Flask, Response, g, request
from werkzeug.exceptions import ClientDisconnected, HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import PathConverter

from app import celery_enqueue
from app.multipart import discard_rest
from app.s3 import access, buckets, cors, lifecycle, lock, multipart, objects, post, tagging
from app.s3.continuation import DeferredContinue, pending_continue
from app.s3.errors import (IncompleteBody, InternalError, InvalidURI, MethodNotAllowed,
                           FeatureNotImplemented, S3Error, SlowDown, error_xml, s3_error_for)
from app.s3.ratelimit import S3RateLimit
from app.s3.request import S3Call
from app.s3.sigv4 import AuthContext, authenticate, is_signed, parse_query
from app.security import HSTS, SECURE_HEADERS
from config.logging import REQUEST_ID
from config.secretkey import load_or_create
from config.settings import Settings
from pipeline.access.credentials import S3Credentials
from pipeline.cache import Generation, one_read_per_request
from pipeline.errors import StoreError
from pipeline.store import ObjectStore
from workers.wiring import build_store

log = logging.getLogger(__name__)
access_log = logging.getLogger("minis3.s3.access")

Handler = Callable[[S3Call], Response]
METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]

SERVICE_ROUTES: dict[tuple[str, str | None], Handler] = {
    ("GET", None): buckets.list_buckets,
}
BUCKET_ROUTES: dict[tuple[str, str | None], Handler] = {
    ("PUT", None): buckets.create_bucket,
    ("HEAD", None): buckets.head_bucket,
    ("DELETE", None): buckets.delete_bucket,
    ("GET", None): buckets.list_objects,
    ("GET", "location"): buckets.get_location,
    ("GET", "versioning"): buckets.get_versioning,
    ("PUT", "versioning"): buckets.put_versioning,
    ("GET", "versions"): buckets.list_versions,
    ("GET", "uploads"): multipart.list_uploads,
    ("POST", "delete"): objects.delete_objects,
    ("GET", "acl"): access.get_bucket_acl,
    ("PUT", "acl"): access.put_bucket_acl,
    ("GET", "policy"): access.get_bucket_policy,
    ("PUT", "policy"): access.put_bucket_policy,
    ("DELETE", "policy"): access.delete_bucket_policy,
    ("GET", "policyStatus"): access.get_bucket_policy_status,
    ("PUT", "publicAccessBlock"): access.put_public_access_block,
    ("GET", "publicAccessBlock"): access.get_public_access_block,
    ("DELETE", "publicAccessBlock"): access.delete_public_access_block,
    ("PUT", "ownershipControls"): access.put_bucket_ownership_controls,
    ("GET", "ownershipControls"): access.get_bucket_ownership_controls,
    ("DELETE", "ownershipControls"): access.delete_bucket_ownership_controls,
    ("PUT", "cors"): cors.put_bucket_cors,
    ("GET", "cors"): cors.get_bucket_cors,
    ("DELETE", "cors"): cors.delete_bucket_cors,
    ("PUT", "tagging"): tagging.put_bucket_tagging,
    ("GET", "tagging"): tagging.get_bucket_tagging,
    ("DELETE", "tagging"): tagging.delete_bucket_tagging,
    ("PUT", "lifecycle"): lifecycle.put_bucket_lifecycle,
    ("GET", "lifecycle"): lifecycle.get_bucket_lifecycle,
    ("DELETE", "lifecycle"): lifecycle.delete_bucket_lifecycle,
    ("PUT", "object-lock"): lock.put_object_lock_configuration,
    ("GET", "object-lock"): lock.get_object_lock_configuration,
    ("POST", None): post.post_object,  # an HTML form: signed by its policy, answered before SigV4 (UNSIGNED)
}
OBJECT_ROUTES: dict[tuple[str, str | None], Handler] = {
    ("PUT", None): objects.put_object,  # CopyObject too, when x-amz-copy-source is present
    ("GET", None): objects.get_object,
    ("HEAD", None): objects.head_object,
    ("DELETE", None): objects.delete_object,
    ("POST", "uploads"): multipart.create_upload,
    ("PUT", "uploadId"): multipart.upload_part,  # UploadPartCopy too
    ("GET", "uploadId"): multipart.list_parts,
    ("DELETE", "uploadId"): multipart.abort_upload,
    ("POST", "uploadId"): multipart.complete_upload,
    ("GET", "acl"): access.get_object_acl,
    ("PUT", "acl"): access.put_object_acl,
    ("GET", "tagging"): tagging.get_object_tagging,
    ("PUT", "tagging"): tagging.put_object_tagging,
    ("DELETE", "tagging"): tagging.delete_object_tagging,
    ("GET", "attributes"): objects.get_object_attributes,
    ("PUT", "retention"): lock.put_object_retention,
    ("GET", "retention"): lock.get_object_retention,
    ("PUT", "legal-hold"): lock.put_object_legal_hold,
    ("GET", "legal-hold"): lock.get_object_legal_hold,
    ("GET", "torrent"): objects.get_object_torrent,
}
# Query parameters that name a sub-resource (an operation of its own), in the order they are
# looked for; those without a route answer 501. Any other parameter (prefix, x-id...) is an option.
SUBRESOURCES = (
    "uploads", "uploadId", "delete", "location", "versioning", "versions", "acl", "tagging",
    "accelerate", "analytics", "attributes", "cors", "encryption", "intelligent-tiering", "inventory",
    "legal-hold", "lifecycle", "logging", "metadataConfiguration", "metrics", "notification", "object-lock",
    "ownershipControls", "policy", "policyStatus", "publicAccessBlock", "renameObject", "replication",
    "requestPayment", "restore", "retention", "select", "session", "torrent", "website",
)
# Handlers of requests that carry no SigV4 signature (a CORS preflight is answered the same way,
# at every level and whatever its sub-resource): answered before serve() authenticates.
UNSIGNED: set[Handler] = {post.post_object}
# the security headers that mean something for an API serving object bytes (never a page of ours)
S3_SECURE_HEADERS = {name: SECURE_HEADERS[name] for name in (
    "X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy", "Referrer-Policy",
    "X-Permitted-Cross-Domain-Policies")}
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


def subresource(call: S3Call) -> str | None:
    return next((name for name in SUBRESOURCES if name in call.query), None) if call.bucket is not None else None


def route(call: S3Call) -> Handler:
    """The handler of a call: by level, method and sub-resource."""
    sub = subresource(call)
    if call.bucket is None:
        table = SERVICE_ROUTES
        sub = None
    elif call.key is None:
        table = BUCKET_ROUTES
    else:
        table = OBJECT_ROUTES
    handler = table.get((call.method, sub))
    if handler is not None:
        return handler
    if sub is not None:
        raise FeatureNotImplemented(f"This store does not implement the {sub!r} sub-resource for "
                                    f"{call.method} (NotImplemented)")
    if call.method == "POST" and call.key is None and call.bucket is not None:
        raise FeatureNotImplemented("POST uploads from HTML forms are not implemented")
    raise MethodNotAllowed(Method=call.method, ResourceType="SERVICE" if call.bucket is None else
                           "BUCKET" if call.key is None else "OBJECT")


# --- the request: raw path, bucket and key -------------------------------------------------------

def raw_path(environ) -> str:
    """The path exactly as it came on the wire (without the query string)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        if raw.startswith(("http://", "https://")):  # absolute-form request target
            rest = raw.split("://", 1)[1]
            raw = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        return raw.split("?", 1)[0] or "/"
    # no raw target (Werkzeug's test client): re-encode the decoded path
    return quote(environ.get("PATH_INFO", "/").encode("latin-1"), safe="/-_.~!$&'()*+,;=:@")


def _decode(segment: str) -> str:
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidURI(URI=segment) from None  # S3's answer to a path that is not UTF-8 once decoded


def locate(path: str, host: str, domain: str | None) -> tuple[str | None, str | None]:
    """(bucket, key) of a request; None for what the request does not name."""
    rest = path[1:] if path.startswith("/") else path
    hostname = host.rsplit(":", 1)[0].lower() if host and not host.endswith("]") else (host or "").lower()
    if domain and hostname.endswith("." + domain.lower()):
        bucket = hostname[:-len(domain) - 1]
        return bucket, (_decode(rest) or None)
    bucket, sep, key = rest.partition("/")
    return (_decode(bucket) or None), (_decode(key) or None if sep else None)


def presented_access_key(headers, query: dict[str, str]) -> str | None:
    """The access key id a request claims (not yet verified: never what a limit is counted on)."""
    credential = query.get("X-Amz-Credential")
    if credential:
        return credential.split("/", 1)[0]
    match = _CREDENTIAL.search(headers.get("Authorization") or "")
    return match.group(1) if match else None


# --- errors --------------------------------------------------------------------------------------

def as_s3_error(exc: BaseException) -> S3Error:
    if isinstance(exc, S3Error):
        return exc
    if isinstance(exc, StoreError):
        err = s3_error_for(exc)
        if err.status >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        return err
    if isinstance(exc, ClientDisconnected):
        return IncompleteBody()
    if isinstance(exc, HTTPException):
        if exc.code == 405:
            return MethodNotAllowed()
        if exc.code and 400 <= exc.code < 500:
            return S3Error.for_code("InvalidRequest", exc.description or exc.name)
    log.exception("unexpected error")
    return InternalError()


class AnyPath(PathConverter):
    """A path that may hold any character, a newline too (Werkzeug's path stops at one)."""
    regex = "[^/](?s:.)*?"


def create_s3_app(settings: Settings | None = None, store: ObjectStore | None = None,
                  enqueue: Callable[..., None] | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.url_map.merge_slashes = False  # "/bucket//key" names the key "/key"
    store = build_store(settings, store=store, heal=enqueue is None)
    enqueue = enqueue or celery_enqueue(settings, store.redis)  # one-chunk objects: the small-file list
    names = store.object_names(enqueue=lambda f: enqueue(f.id, None, small=f.chunk_count <= 1))
    credentials = S3Credentials(store.meta, settings.secret_key or load_or_create(settings.var_dir),
                                Generation(store.redis))
    limits = S3RateLimit(settings.s3_rate_limit, settings.redis_url, settings.s3_failed_rate_limit)
    app.extensions["minis3.store"] = store
    app.extensions["minis3.names"] = names
    app.extensions["minis3.credentials"] = credentials  # a POST form's policy is signed with one

    def verify(path: str, raw_query: str, query: dict[str, str], host: str) -> AuthContext | None:
        """The caller, verified, and counted against its access key's limit; an unsigned or failed
        request counts against its address's budget of failures instead. None: anonymous (what it
        may do, app.s3.access decides)."""
        address = request.remote_addr or "-"
        if not is_signed(request.headers, query):
            limits.count_failure(address)
            return None

        def lookup(access_key: str):  # a key no cache knows costs a MongoDB read: not past the budget
            return credentials.lookup(access_key, before_read=lambda: limits.require_failure_budget(address))

        try:
            auth = authenticate(request.method, path, raw_query, request.headers, lookup)
        except S3Error as exc:
            if not isinstance(exc, SlowDown):
                limits.count_failure(address)
            raise
        limits.check(auth.access_key)
        return auth

    def serve(**_):
        raw_query = request.environ.get("QUERY_STRING", "")
        query = dict(parse_query(raw_query))
        path = raw_path(request.environ)
        host = request.headers.get("Host", "")
        g.resource = path
        with one_read_per_request():  # credential, bucket, ACL, policy, versioning: one Redis GET
            auth = verify(path, raw_query, query, host)
            bucket, key = locate(path, host, settings.s3_domain)
            g.resource = "/" + "/".join(p for p in (bucket, key) if p is not None) if bucket else "/"
            call = S3Call(method=request.method, bucket=bucket, key=key, raw_path=path, query=query,
                          headers=request.headers, stream=request.stream, request_id=g.request_id, host=host,
                          settings=settings, names=names, enqueue=enqueue, auth=auth,
                          remote_addr=request.remote_addr)
            handler = route(call)
            # who may do what, decided once, before the body is read
            access.authorize(call, subresource(call), creates_bucket=handler is buckets.create_bucket)
            return handler(call)

    app.url_map.converters["anypath"] = AnyPath
    for rule in ("/", "/<anypath:_path>"):
        app.add_url_rule(rule, "s3", serve, methods=METHODS, provide_automatic_options=False,
                         strict_slashes=False)

    @app.before_request
    def _request_id():
        g.request_id = secrets.token_hex(8).upper()
        REQUEST_ID.set(g.request_id)  # on every log record of this request

    @app.teardown_request
    def _request_id_done(_exc=None):
        REQUEST_ID.set("-")  # a thread's later records outside any request carry none

    @app.before_request
    def _unsigned():
        """A CORS preflight or an HTML form upload: no SigV4 to check, so answered here, before serve()."""
        if request.method not in ("OPTIONS", "POST"):
            return None
        path, host = raw_path(request.environ), request.headers.get("Host", "")
        query = dict(parse_query(request.environ.get("QUERY_STRING", "")))
        bucket, key = locate(path, host, settings.s3_domain)
        call = S3Call(method=request.method, bucket=bucket, key=key, raw_path=path, query=query,
                      headers=request.headers, stream=request.stream, request_id=g.request_id, host=host,
                      settings=settings, names=names, enqueue=enqueue, remote_addr=request.remote_addr)
        if request.method == "OPTIONS":
            handler = cors.preflight
        else:
            try:
                handler = route(call)
            except S3Error:
                return None  # serve() authenticates first, then answers the same error
            if handler not in UNSIGNED:
                return None
        g.resource = "/" + "/".join(p for p in (bucket, key) if p is not None) if bucket else "/"
        limits.check(f"addr:{request.remote_addr}")
        return handler(call)

    @app.after_request
    def _cors_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin and request.method != "OPTIONS":
            try:
                bucket = locate(raw_path(request.environ), request.headers.get("Host", ""), settings.s3_domain)[0]
            except S3Error:
                return response
            cors.add_response_headers(response, names, bucket, request.method, origin,
                                      request.headers.get("Access-Control-Request-Method"))
        return response

    @app.errorhandler(Exception)
    def _error(exc: Exception):
        err = as_s3_error(exc)
        # a client still sending then reads the answer, not a reset; one waiting for 100 Continue
        # sends nothing, and its connection closes after the answer
        if request.method in ("PUT", "POST") and not pending_continue(request.environ):
            discard_rest(request.stream)
        headers = dict(getattr(err, "headers", None) or {})
        if err.retry_after is not None:
            headers["Retry-After"] = str(err.retry_after)
        body = b"" if request.method == "HEAD" else error_xml(err, g.get("resource", request.path),
                                                               g.get("request_id", ""))
        return Response(body, status=err.status, headers=headers, mimetype="application/xml")

    @app.after_request
    def _headers(response: Response) -> Response:
        rid = g.get("request_id", "")
        response.headers["x-amz-request-id"] = rid
        response.headers["x-amz-id-2"] = rid
        response.headers["X-Request-ID"] = rid
        for name, value in S3_SECURE_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.is_secure:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        response.headers.pop("Server", None)  # gunicorn's (minis3) is the one
        access_log.info("%s %s %d", request.method, g.get("resource", request.path), response.status_code)
        return response

    if settings.trusted_proxies:  # failures are counted per client: the one before the balancer
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=0, x_port=0, x_prefix=0)
    app.wsgi_app = DeferredContinue(app.wsgi_app)
    return app
