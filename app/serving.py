"""How the web front ends are served by gunicorn: where to listen, and gunicorn's settings.

Runs in gunicorn's master while it reads its configuration (``app/gunicorn_conf.py``) and in the
runner, so it loads no web framework and no prometheus-client (the workers import those after
the fork, once ``PROMETHEUS_MULTIPROC_DIR`` is set).
"""
from __future__ import annotations

import ipaddress
import logging
import os

from config import slowclients
from config.logging import gunicorn_logconfig
from config.metrics import MULTIPROC_ENV, prepare_metrics_dir
from config.settings import Settings
from pipeline.access.keys import open_reason

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
SERVER_HEADER = "minis3"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_host(settings: Settings, host: str | None = None, announce: bool = True) -> str:
    """``host`` (MINIS3_HOST by default), or loopback when the service may run open (and then
    say so, loudly)."""
    host = settings.host if host is None else host
    reason = open_reason(settings)
    if reason is None:
        return host
    bound = host if is_loopback(host) else LOOPBACK
    if announce:
        moved = "" if bound == host else f" (not {host}: open mode binds loopback only)"
        bar = "!" * 78
        log.warning("\n%s\n!! minis3 is serving WITHOUT authentication: %s.\n!! Listening on %s only%s.\n"
                    "!! Create a key with `minis3 keys create --tenant NAME` (then restart to listen on "
                    "MINIS3_HOST).\n%s", bar, reason, bound, moved, bar)
    return bound


def prepare_master(settings: Settings) -> None:
    """Once per gunicorn master, before its workers exist: refuse an untested gunicorn or kombu,
    name the metrics directory, and put the slow-client limits in place."""
    import gunicorn
    import gunicorn.http.wsgi

    from workers import transport

    try:
        slowclients.install(settings.header_timeout_s, settings.read_timeout_s)  # idle clients hold no thread
        if not isinstance(getattr(gunicorn.http.wsgi, "SERVER", None), str):
            raise slowclients.UnsupportedGunicorn(
                f"minis3 cannot start: gunicorn {gunicorn.__version__} is not the tested "
                f"{slowclients.TESTED}: gunicorn.http.wsgi.SERVER (the Server header) is missing")
        if (settings.redis_url or "").startswith("redis://"):
            transport.check()  # what the web's task producer relies on
    except (slowclients.UnsupportedGunicorn, transport.UnsupportedKombu) as exc:
        raise SystemExit(str(exc)) from None  # refuse to start rather than fail every request
    gunicorn.http.wsgi.SERVER = SERVER_HEADER  # no server product banner in the Server header
    prepare_metrics_dir(settings)  # before any worker imports prometheus-client


def child_exit(server, worker) -> None:
    """Drop a dead worker's live-gauge files so that /metrics stops counting it."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def gunicorn_settings(settings: Settings, bind: str) -> dict:
    """gunicorn's settings for one front end listening on ``bind`` (``host:port``).

    gthread workers: the arbiter's heartbeat runs beside the request threads, so a multi-GB upload
    or download that takes many minutes is never killed by ``timeout``; idle keep-alive
    connections wait in the poller and hold no thread. No gunicorn access log: app.metrics logs
    one line per request once its body has been sent.
    """
    conf = {
        "bind": bind,
        "worker_class": "gthread",
        "workers": settings.web_workers,
        "threads": settings.web_threads,
        "timeout": 120,
        "graceful_timeout": 30,
        "keepalive": 5,
        "worker_connections": 1000,
        "limit_request_line": 8190,
        "child_exit": child_exit,
        # gunicorn's control socket has one default path per user: the web and S3 front ends (and
        # every store a test starts) would each take it over from the other and unlink it on exit
        "control_socket_disable": True,
    }
    if settings.log_format == "json":
        conf["logconfig_dict"] = gunicorn_logconfig()  # gunicorn's own lines as JSON too
    return conf
