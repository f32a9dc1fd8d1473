"""Log format shared by the web, worker and beat processes.

Every record carries ``request_id``: the id of the HTTP request being served, or of the request
that queued the ingest being run, so one grep follows an upload from the web to the worker.
"""
import contextvars
import logging
import os

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("minis3_request_id", default="-")
LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s rid=%(request_id)s: %(message)s"
WORKER_LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s rid=%(request_id)s: %(message)s"


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


def configure_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("MINIS3_LOG_LEVEL", "INFO")).upper(),
        format=LOG_FORMAT,
    )
