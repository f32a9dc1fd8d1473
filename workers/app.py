"""Celery entry point: ``celery -A workers.app worker``."""
import logging

from config.logging import configure_logging
from config.metrics import prepare_metrics_dir
from config.settings import Settings

_settings = Settings.from_env()
prepare_metrics_dir(_settings)  # before workers.tasks imports prometheus-client
if _settings.log_format == "json":  # what Celery says before its logging is set up, as JSON too
    configure_logging(fmt="json")
    logging.captureWarnings(True)

from workers.celery import make_celery  # noqa: E402
from workers.transport import UnsupportedKombu  # noqa: E402

try:
    app = make_celery(_settings)
except UnsupportedKombu as exc:  # one clear message instead of a failure at the first task
    raise SystemExit(str(exc)) from None
