"""gunicorn settings of the S3 front end: the web's (gthread workers, timeouts, slow-client guards,
``Server: minis3``) bound to ``MINIS3_S3_HOST:MINIS3_S3_PORT``, and ``100 Continue`` left to the
application (config.slowclients.defer_continue; app.s3.continuation sends it on the first read of
a body), so that a request refused before its body never has it sent; any other Expect value is
ignored, as S3 does (config.slowclients.ignore_unknown_expectations).

``gunicorn -c python:app.gunicorn_s3_conf app.s3wsgi:app``. Every S3 request is signed, so the
S3 port never runs open and binds where it is told.
"""
from app.serving import gunicorn_settings, prepare_master
from config import slowclients
from config.logging import configure_logging
from config.settings import Settings

_settings = Settings.from_env()
configure_logging(fmt=_settings.log_format)
try:
    slowclients.defer_continue()
    slowclients.ignore_unknown_expectations()  # Expect: 200 is served, as by S3 (gunicorn: 417)
except slowclients.UnsupportedGunicorn as exc:
    raise SystemExit(str(exc)) from None  # refuse to start rather than answer 100 Continue to anything
prepare_master(_settings)
globals().update(gunicorn_settings(_settings, f"{_settings.s3_host}:{_settings.s3_port}"))
