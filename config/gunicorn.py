"""gunicorn settings: ``gunicorn -c python:config.gunicorn app.wsgi:app``.

gthread workers: the arbiter's heartbeat runs beside the request threads, so a multi-GB upload
or download that takes many minutes is never killed by ``timeout``; idle keep-alive connections
wait in the poller and hold no thread.
"""
import os

import gunicorn.http.wsgi

from app.auth import listen_host
from config import slowclients
from config.metrics import MULTIPROC_ENV, prepare_metrics_dir
from config.settings import Settings

_settings = Settings.from_env()
prepare_metrics_dir(_settings)  # in the master, before any worker imports prometheus-client

bind = f"{listen_host(_settings)}:{_settings.port}"  # loopback only while serving without API keys
worker_class = "gthread"
workers = _settings.web_workers
threads = _settings.web_threads
timeout = 120
graceful_timeout = 30
keepalive = 5
worker_connections = 1000
limit_request_line = 8190
gunicorn.http.wsgi.SERVER = "minis3"  # no server product banner in the Server header
try:
    slowclients.install(_settings.header_timeout_s, _settings.read_timeout_s)  # idle clients hold no thread
except slowclients.UnsupportedGunicorn as exc:  # refuse to start rather than fail every request
    raise SystemExit(str(exc)) from None
# no gunicorn access log: app.metrics logs one line per request once its body has been sent


def child_exit(server, worker):
    """Drop a dead worker's live-gauge files so that /metrics stops counting it."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
