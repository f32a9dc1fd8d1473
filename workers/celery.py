"""The Celery app, built from the same settings as the web app."""
from __future__ import annotations

import logging
import os
from typing import Callable

from celery import Celery
from kombu.exceptions import ChannelError, OperationalError
from celery.signals import after_setup_logger, after_setup_task_logger, worker_init

from config.logging import WORKER_LOG_FORMAT, JsonFormatter
from config.settings import Settings
from pipeline.errors import ServiceUnavailable

log = logging.getLogger(__name__)

INGEST_QUEUE = "ingest"
MAINTENANCE_QUEUE = "maintenance"


def make_celery(settings: Settings) -> Celery:
    app = Celery("minis3", broker=settings.redis_url, include=["workers.tasks"])
    if (settings.redis_url or "").startswith("redis://"):
        from workers import transport

        transport.check()  # the kombu internal it overrides is there: else refuse to start
        app.conf.broker_transport = "workers.transport:Transport"  # survives a Redis restart
    app.conf.update(
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,  # ingest and GC are idempotent, so a rerun after a crash is harmless
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600, "socket_connect_timeout": 3,
                                  "socket_timeout": 10},
        task_default_queue=INGEST_QUEUE,
        # the small-file drain is not itself a file waiting: it runs beside the maintenance tasks
        task_routes={"minis3.gc": {"queue": MAINTENANCE_QUEUE},
                     "minis3.ingest_small": {"queue": MAINTENANCE_QUEUE},
                     "minis3.requeue_stuck": {"queue": MAINTENANCE_QUEUE},
                     "minis3.clean_spool": {"queue": MAINTENANCE_QUEUE},
                     "minis3.sample": {"queue": MAINTENANCE_QUEUE},
                     "minis3.abort_abandoned_uploads": {"queue": MAINTENANCE_QUEUE},
                     "minis3.lifecycle": {"queue": MAINTENANCE_QUEUE},
                     "minis3.heal": {"queue": MAINTENANCE_QUEUE},
                     "minis3.heal_flagged": {"queue": MAINTENANCE_QUEUE},
                     "minis3.scrub": {"queue": MAINTENANCE_QUEUE},
                     "minis3.ec_convert": {"queue": MAINTENANCE_QUEUE},
                     "minis3.drain": {"queue": MAINTENANCE_QUEUE}},
        worker_send_task_events=True,
        worker_log_format=WORKER_LOG_FORMAT,
        # no task-sent event: Flower learns a task, with its args, from the worker's task-received
        # event, and publishing one more event took a third of the web's enqueue time
        task_send_sent_event=False,
        beat_schedule={
            "gc": {"task": "minis3.gc", "schedule": settings.gc_interval_s},
            "requeue-stuck": {"task": "minis3.requeue_stuck", "schedule": max(1.0, settings.stuck_after_s / 2)},
            "clean-spool": {"task": "minis3.clean_spool", "schedule": max(1.0, settings.spool_abandon_s / 4)},
            "sample": {"task": "minis3.sample", "schedule": settings.sample_interval_s,
                       "options": {"expires": settings.sample_interval_s}},  # a late sample is skipped
            "abort-abandoned-uploads": {"task": "minis3.abort_abandoned_uploads",
                                        "schedule": min(3600.0, max(1.0, settings.multipart_abandon_s / 4))},
            "lifecycle": {"task": "minis3.lifecycle", "schedule": settings.lifecycle_interval_s,
                          "options": {"expires": settings.lifecycle_interval_s}},  # a late run is skipped
            "heal-flagged": {"task": "minis3.heal_flagged", "schedule": 60.0},
            "scrub": {"task": "minis3.scrub", "schedule": max(1.0, min(60.0, settings.scrub_period_s / 10))},
        },
    )
    if settings.worker_nice:
        worker_init.connect(_lower_priority(settings.worker_nice), weak=False)
    if settings.log_format == "json":
        after_setup_logger.connect(_json_lines, weak=False)
        after_setup_task_logger.connect(_json_lines, weak=False)
    app.minis3_settings = settings
    return app


def _lower_priority(nice: int) -> Callable[..., None]:
    """A worker process (and the pool it forks) runs at ``nice``: ingest, GC, heal and scrub take
    the CPU that requests leave, so that uploads and reads are answered first under load."""

    def lower(**_) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, max(nice, os.getpriority(os.PRIO_PROCESS, 0)))
        except OSError as exc:
            log.warning("could not lower the worker's CPU priority to nice %d: %s", nice, exc)
    return lower


def queue_depth_reader(app: Celery, queue: str = INGEST_QUEUE) -> Callable[[], int]:
    """How many messages wait in ``queue``, asked through kombu's public API (a passive queue
    declare), so that no caller depends on how a transport lays a queue out in the broker."""

    def depth() -> int:
        conn = app.connection_for_read()
        try:
            with conn:
                conn.ensure_connection(max_retries=0)  # broker down: fail now, do not retry for ever
                try:
                    return int(conn.default_channel.queue_declare(queue=queue, passive=True).message_count)
                except ChannelError:  # no such queue (on Redis: none was ever left waiting in it)
                    return 0
        except (OperationalError, *conn.connection_errors) as exc:
            raise ServiceUnavailable(f"queue service unavailable: {exc.__class__.__name__}") from exc

    return depth


def _json_lines(logger=None, **_) -> None:
    """MINIS3_LOG_FORMAT=json: the handlers Celery set up (worker, task and beat logs) write JSON."""
    for handler in logger.handlers if logger is not None else ():
        handler.setFormatter(JsonFormatter())
