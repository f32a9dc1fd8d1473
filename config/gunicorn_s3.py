"""gunicorn settings of the S3 front end: the web's (config.gunicorn: gthread workers, timeouts,
slow-client guards, ``Server: minis3``) bound to ``MINIS3_S3_HOST:MINIS3_S3_PORT``.

``gunicorn -c python:config.gunicorn_s3 app.s3wsgi:app``. Every S3 request is signed, so the
S3 port never runs open and binds where it is told.
"""
from config.gunicorn import *  # noqa: F401,F403
from config.gunicorn import _settings

bind = f"{_settings.s3_host}:{_settings.s3_port}"
