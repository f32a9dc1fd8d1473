"""Log format shared by the web, worker and beat processes.

Every record carries ``request_id``: the id of the HTTP request being served, or of the request
that queued the ingest being run, so one grep follows an upload from the web to the worker.

``MINIS3_LOG_FORMAT=text`` (the default) writes the lines below; ``json`` writes one JSON object
per line for log pipelines: ``time`` (ISO 8601 UTC), ``level``, ``logger``, ``message``,
``process``, ``request_id`` when there is one, the structured fields a call passes with
``extra=`` (the access line's method, route, status, bytes and duration; the ingest line's file
id, status, chunks and seconds), and ``exception`` with the traceback.
"""
import contextvars
import json
import logging
import os
from datetime import datetime, timezone

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("minis3_request_id", default="-")
LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s rid=%(request_id)s: %(message)s"
WORKER_LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s rid=%(request_id)s: %(message)s"
LOG_FORMAT_ENV = "MINIS3_LOG_FORMAT"

# attributes every LogRecord has: anything else on a record came from ``extra=``
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "request_id", "taskName"}


def _install_request_id_records() -> None:
    base = logging.getLogRecordFactory()
    if getattr(base, "minis3_request_id", False):
        return

    def factory(*args, **kwargs):
        record = base(*args, **kwargs)
        record.request_id = REQUEST_ID.get()
        return record

    factory.minis3_request_id = True
    logging.setLogRecordFactory(factory)


_install_request_id_records()


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
            + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        request_id = getattr(record, "request_id", "-")
        if request_id and request_id != "-":
            out["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def log_format(value: str | None = None) -> str:
    """``text`` or ``json``: ``value``, else MINIS3_LOG_FORMAT, else text."""
    return (value or os.environ.get(LOG_FORMAT_ENV) or "text").strip().lower()


def formatter(fmt: str | None = None, text_format: str = LOG_FORMAT) -> logging.Formatter:
    return JsonFormatter() if log_format(fmt) == "json" else logging.Formatter(text_format)


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Root logging to stderr in the configured format (once: an existing setup is kept)."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    logging.basicConfig(level=(level or os.environ.get("MINIS3_LOG_LEVEL", "INFO")).upper(), handlers=[handler])


def gunicorn_logconfig(level: str | None = None) -> dict:
    """gunicorn's ``logconfig_dict`` for JSON lines: its own records and the root logger's go to
    stderr as JSON; its access log stays off (the app logs one line per request itself)."""
    level = (level or os.environ.get("MINIS3_LOG_LEVEL", "INFO")).upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        },
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "formatters": {"json": {"()": "config.logging.JsonFormatter"}},
    }
