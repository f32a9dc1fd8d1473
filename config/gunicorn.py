"""gunicorn settings: ``gunicorn -c python:config.gunicorn app.wsgi:app``.

gthread workers: the arbiter's heartbeat runs beside the request threads, so a multi-GB upload
or download that takes many minutes is never killed by ``timeout``; idle keep-alive connections
wait in the poller and hold no thread.
"""
from config.settings import Settings

_settings = Settings.from_env()

bind = f"{_settings.host}:{_settings.port}"
worker_class = "gthread"
workers = _settings.web_workers
threads = _settings.web_threads
timeout = 120
graceful_timeout = 30
keepalive = 5
worker_connections = 1000
limit_request_line = 8190
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}o)s'
