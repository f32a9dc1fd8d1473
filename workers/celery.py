"""The Celery app, built from the same settings as the web app."""
from __future__ import annotations

from celery import Celery

from config.logging import WORKER_LOG_FORMAT
from config.settings import Settings

INGEST_QUEUE = "ingest"
MAINTENANCE_QUEUE = "maintenance"


def make_celery(settings: Settings) -> Celery:
    app = Celery("minis3", broker=settings.redis_url, include=["workers.tasks"])
    if (settings.redis_url or "").startswith("redis://"):
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
        task_routes={"minis3.gc": {"queue": MAINTENANCE_QUEUE},
                     "minis3.requeue_stuck": {"queue": MAINTENANCE_QUEUE},
                     "minis3.clean_spool": {"queue": MAINTENANCE_QUEUE},
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
            "heal-flagged": {"task": "minis3.heal_flagged", "schedule": 60.0},
            "scrub": {"task": "minis3.scrub", "schedule": max(1.0, min(60.0, settings.scrub_period_s / 10))},
        },
    )
    app.minis3_settings = settings
    return app
