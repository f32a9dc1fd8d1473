"""gunicorn settings of the /api front end:
``gunicorn -c python:app.gunicorn_conf app.wsgi:app`` (settings from ``MINIS3_*``).

gunicorn reads the module's names as its settings; ``app.serving.gunicorn_settings`` builds
them for any bind, so that another front end is one more module like this one.
"""
from app.serving import gunicorn_settings, listen_host, prepare_master
from config.logging import configure_logging
from config.settings import Settings

_settings = Settings.from_env()
configure_logging(fmt=_settings.log_format)  # the master's own lines (the open-mode warning) too
prepare_master(_settings)
# loopback only while serving without API keys
globals().update(gunicorn_settings(_settings, f"{listen_host(_settings)}:{_settings.port}"))
