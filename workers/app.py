"""Celery entry point: ``celery -A workers.app worker``."""
from config.settings import Settings
from workers.celery import make_celery

app = make_celery(Settings.from_env())
