"""WSGI entry point for gunicorn: ``gunicorn app.wsgi:app``."""
from config.logging import configure_logging
from app import create_app

configure_logging()
app = create_app()
