"""WSGI entry point of the S3 front end: ``gunicorn -c python:app.gunicorn_s3_conf app.s3wsgi:app``."""
from config.logging import configure_logging
from app.s3.routes import create_s3_app

configure_logging()
app = create_s3_app()
