"""The Flask application factory.

The package is imported by gunicorn's master for ``app.gunicorn_conf``: Flask, the blueprints
and prometheus-client are imported when an app is built, in the workers, not here.
"""
from __future__ import annotations

import logging
import re
import uuid
from typing import TYPE_CHECKING, Callable

from config.settings import Settings

if TYPE_CHECKING:
    from flask import Flask

    from pipeline.store import ObjectStore

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def celery_enqueue(settings: Settings, redis_client=None) -> Callable[..., None]:
    """Queue ``ingest(file_id)`` through the one ingest queue (workers.queue)."""
    from workers.celery import make_celery
    from workers.queue import ingest_queue

    return ingest_queue(make_celery(settings), redis_client)


def celery_queue_depth(settings: Settings, redis_client=None) -> Callable[[], int]:
    """How many files wait for ingest (for /api/stats and /metrics)."""
    from workers.celery import make_celery
    from workers.queue import ingest_queue_depth

    return ingest_queue_depth(make_celery(settings), redis_client)


def create_app(settings: Settings | None = None, store: ObjectStore | None = None,
               enqueue: Callable[[str, str | None], None] | None = None,
               queue_depth: Callable[[], int] | None = None) -> Flask:
    from flask import Flask, g, request

    from app import metrics
    from app.api import api
    from app.dashboard import dashboard
    from app.errors import register_error_handlers
    from app.openapi import openapi
    from app.security import init_security
    from workers.wiring import build_store

    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["MINIS3_SETTINGS"] = settings
    app.config["MAX_FORM_MEMORY_SIZE"] = 64 * 1024
    store = build_store(settings, store=store, heal=enqueue is None)
    app.extensions["minis3.store"] = store
    app.extensions["minis3.names"] = store.object_names()
    app.extensions["minis3.enqueue"] = enqueue or celery_enqueue(settings, store.redis)
    app.extensions["minis3.queue_depth"] = queue_depth or celery_queue_depth(settings, store.redis)

    @app.before_request
    def _request_context():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex

    @app.after_request
    def _request_id_header(response):
        response.headers["X-Request-ID"] = getattr(g, "request_id", "")
        return response

    init_security(app, settings)  # auth, rate limits, CORS, secure headers
    metrics.init_app(app, settings)
    app.register_blueprint(api)
    app.register_blueprint(openapi)
    app.register_blueprint(dashboard)
    register_error_handlers(app)
    return app
