"""Request accounting of the web processes: one log line and Prometheus series per request,
and ``GET /metrics`` for the whole store.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``minis3 run``, gunicorn's config, the celery app), every
process writes its series to files there and ``/metrics`` adds up all gunicorn workers and
celery pool processes; without it (a single in-process app) the default registry is served.
A request is accounted when its body has been sent, so a download's duration and byte count
cover the whole transfer.

The metrics are store-wide (deduplicated chunks among them): an operator's view. With
``MINIS3_METRICS_PORT`` they are served on their own listener on 127.0.0.1, the way Prometheus
exporters run, and the web port has no ``/metrics``; every web worker binds that port with
SO_REUSEPORT and serves the same summed series, so any one of them may answer and the listener
lives as long as any worker does. Without it, ``/metrics`` on the web port needs an admin key
whenever keys are required (``app.auth.is_operator``).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from socketserver import ThreadingMixIn
from typing import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram,
                               generate_latest, make_wsgi_app, multiprocess)
from prometheus_client.core import GaugeMetricFamily

from app.auth import is_operator
from app.serving import LOOPBACK
from config.logging import REQUEST_ID
from config.metrics import MULTIPROC_ENV
from config.settings import Settings
from pipeline.errors import ChunkUnavailable, Forbidden, StoreError

log = logging.getLogger(__name__)
access_log = logging.getLogger("minis3.access")

metrics = Blueprint("metrics", __name__)

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
ARRIVED = "minis3.arrived"
DOWNLOAD_ENDPOINTS = ("api.download", "api.download_by_hash")

REQUESTS = Counter("minis3_http_requests_total", "HTTP requests by method, route and status",
                   ["method", "route", "status"])
LATENCY = Histogram("minis3_http_request_duration_seconds",
                    "Time from the request's arrival to the last byte of its response",
                    ["method", "route", "status"], buckets=DURATION_BUCKETS)
UPLOAD_BYTES = Counter("minis3_upload_bytes_total", "File bytes of accepted uploads")
DOWNLOAD_BYTES = Counter("minis3_download_bytes_total", "File bytes sent by downloads")
READ_FAILURES = Counter("minis3_read_chunk_failures_total",
                        "Chunks that failed verification on read (missing, or not matching their checksum)",
                        ["reason"])


class QueueDepthCollector:
    """The ingest queue's depth, asked at scrape time (no sample while the broker is down)."""

    def __init__(self, queue_depth: Callable[[], int]):
        self.queue_depth = queue_depth

    def collect(self):
        try:
            depth = self.queue_depth()
        except StoreError:
            return
        gauge = GaugeMetricFamily("minis3_ingest_queue_depth", "Ingest tasks waiting in the queue")
        gauge.add_metric([], depth)
        yield gauge


class RedundancyCollector:
    """Chunks waiting for heal and the last scrub pass, read from MongoDB at scrape time."""

    def __init__(self, store):
        self.store = store

    def collect(self):
        try:
            degraded = self.store.meta.chunks.count_needing_heal()
            scrub = self.store.meta.operations.last_event("scrub") or {}
        except Exception:  # metadata down: no sample rather than a failed scrape
            return
        gauge = GaugeMetricFamily("minis3_degraded_chunks", "Chunks missing fragments, waiting for heal")
        gauge.add_metric([], degraded)
        yield gauge
        last = scrub.get("lastPass") or {}
        if last:
            done = GaugeMetricFamily("minis3_scrub_last_pass_finished_seconds",
                                     "When the last full scrub pass finished (epoch seconds)")
            done.add_metric([], last.get("finished", 0))
            yield done
            found = GaugeMetricFamily("minis3_scrub_last_pass_findings",
                                      "Damaged fragments the last full scrub pass found", labels=["kind"])
            for kind in ("corrupt", "missing"):
                found.add_metric([kind], last.get(kind, 0))
            yield found


class _DefaultRegistry:
    def collect(self):
        return REGISTRY.collect()


def store_registry(queue_depth: Callable[[], int], store) -> CollectorRegistry:
    """Every process's series (or this process's, without a multiprocess directory) and the queue."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_DefaultRegistry())
    registry.register(QueueDepthCollector(queue_depth))
    registry.register(RedundancyCollector(store))
    return registry


@metrics.get("/metrics")
def scrape():
    if not is_operator():
        raise Forbidden("the store-wide metrics need an admin key (minis3 keys create --tenant NAME --admin)")
    registry = store_registry(current_app.extensions["minis3.queue_depth"], current_app.extensions["minis3.store"])
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


class _MetricsServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_port = True  # every web worker binds the port; the kernel hands each scrape to one


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # scrapes are not requests of the store: no access line
        pass


_listener: WSGIServer | None = None
_listener_lock = threading.Lock()


def serve_metrics_port(port: int, queue_depth: Callable[[], int], store) -> WSGIServer | None:
    """Serve the store's metrics on 127.0.0.1:``port`` from a thread of this process (once)."""
    global _listener
    with _listener_lock:
        if _listener is None:
            try:
                server = make_server(LOOPBACK, port, make_wsgi_app(store_registry(queue_depth, store)),
                                     server_class=_MetricsServer, handler_class=_QuietHandler)
            except OSError as exc:
                log.error("cannot serve metrics on %s:%d: %s", LOOPBACK, port, exc)
                return None
            threading.Thread(target=server.serve_forever, name="minis3-metrics", daemon=True).start()
            _listener = server
        return _listener


class AccountedBody:
    """Wraps a response body: counts the bytes that leave and chunks that fail verification,
    and accounts the request when the server closes the body."""

    def __init__(self, body, finish):
        self.body = body
        self.finish = finish
        self.sent = 0
        self.closed = False

    def __iter__(self):
        try:
            for piece in self.body:
                self.sent += len(piece)
                yield piece
        except ChunkUnavailable as exc:
            READ_FAILURES.labels(exc.reason).inc()
            raise

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.finish(self.sent)


def _stamp_arrival(wsgi_app):
    """Note the arrival time before any hook runs (an auth or rate-limit refusal is timed too)."""
    def stamped(environ, start_response):
        environ[ARRIVED] = time.perf_counter()
        return wsgi_app(environ, start_response)
    return stamped


def _bind_request_id() -> None:
    REQUEST_ID.set(g.request_id)


def _unbind_request_id(_exc=None) -> None:
    REQUEST_ID.set("-")  # a thread's later records outside any request carry none


def _account_response(response: Response) -> Response:
    started = request.environ.get(ARRIVED) or time.perf_counter()
    method, status = request.method, response.status_code
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    endpoint, rid = request.endpoint, g.get("request_id", "-")
    path = request.full_path if request.query_string else request.path
    received = request.content_length or 0
    if g.get("upload_bytes"):
        UPLOAD_BYTES.inc(g.upload_bytes)

    def finish(sent: int) -> None:
        seconds = time.perf_counter() - started
        REQUESTS.labels(method, route, status).inc()
        LATENCY.labels(method, route, status).observe(seconds)
        if endpoint in DOWNLOAD_ENDPOINTS:
            DOWNLOAD_BYTES.inc(sent)
        # the request id goes on every record (config.logging); a refused request never bound it
        token = REQUEST_ID.set(rid)
        access_log.info("%s %s %d in=%d out=%d %.1fms", method, path, status, received, sent, seconds * 1000,
                        extra={"method": method, "route": route, "path": path, "status": status,
                               "bytes_in": received, "bytes_out": sent,
                               "duration_ms": round(seconds * 1000, 1)})
        REQUEST_ID.reset(token)

    response.response = AccountedBody(response.response, finish)
    return response


def init_app(app: Flask, settings: Settings) -> None:
    """Register after the hook that sets ``g.request_id``."""
    app.wsgi_app = _stamp_arrival(app.wsgi_app)
    app.before_request(_bind_request_id)
    app.after_request(_account_response)
    app.teardown_request(_unbind_request_id)
    if settings.metrics_port:
        serve_metrics_port(settings.metrics_port, app.extensions["minis3.queue_depth"], app.extensions["minis3.store"])
    else:
        app.register_blueprint(metrics)
