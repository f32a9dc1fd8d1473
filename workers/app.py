"""Celery entry point: ``celery -A workers.app worker``."""
from config.metrics import prepare_metrics_dir
from config.settings import Settings

_settings = Settings.from_env()
prepare_metrics_dir(_settings)  # before workers.tasks imports prometheus-client

from workers.celery import make_celery  # noqa: E402

app = make_celery(_settings)
