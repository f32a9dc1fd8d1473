"""Internals of other libraries that the store replaces are checked at start-up: a gunicorn or
kombu whose internals differ from the pinned, tested range is refused with one clear message."""
from __future__ import annotations

import os
import subprocess
import sys
import types

import gunicorn
import gunicorn.workers.gthread as gthread
import kombu
import pytest
from gunicorn.http import errors, message, unreader
from kombu.transport import redis as kombu_redis

from config import slowclients
from tests.stack import ROOT
from workers import transport


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


# --- gunicorn -----------------------------------------------------------------------------------

def test_the_installed_gunicorn_has_every_internal_the_slow_client_limits_replace():
    assert slowclients.incompatibilities(gthread, unreader, message, errors) == []


def test_a_gunicorn_without_the_worker_data_timeout_constant_is_refused_naming_it_and_the_version():
    fake_gthread = types.SimpleNamespace()  # DEFAULT_WORKER_DATA_TIMEOUT gone
    with pytest.raises(slowclients.UnsupportedGunicorn) as refused:
        slowclients.check(fake_gthread, unreader, message, errors, "28.0.0")
    text = str(refused.value)
    assert "gunicorn 28.0.0" in text and slowclients.TESTED in text
    assert "gunicorn.workers.gthread.DEFAULT_WORKER_DATA_TIMEOUT is missing" in text


def test_a_gunicorn_whose_replaced_methods_changed_shape_is_refused_with_every_difference():
    class SocketUnreader:
        def __init__(self, sock, max_chunk=8192): ...

        def chunk(self):  # lost its size_hint
            ...

    class Request:
        def __init__(self, cfg, unreader, peer_addr): ...  # lost req_number

    fake_unreader = types.SimpleNamespace(SocketUnreader=SocketUnreader)
    fake_message = types.SimpleNamespace(Request=Request)
    fake_gthread = types.SimpleNamespace(DEFAULT_WORKER_DATA_TIMEOUT="5")
    problems = slowclients.incompatibilities(fake_gthread, fake_unreader, fake_message, errors)
    assert problems == [
        "gunicorn.workers.gthread.DEFAULT_WORKER_DATA_TIMEOUT is a str, expected a number of seconds",
        "gunicorn.http.unreader.SocketUnreader.chunk takes (self), expected (self, size_hint)",
        "gunicorn.http.message.Request.__init__ takes (self, cfg, unreader, peer_addr), "
        "expected (self, cfg, unreader, peer_addr, req_number)",
    ]


def test_the_web_configuration_refuses_to_load_on_a_gunicorn_lacking_an_internal():
    """What gunicorn's master does with ``-c python:<settings module>``: one line, exit 1, no
    traceback, before any worker exists."""
    done = run_python("import gunicorn.workers.gthread as g; del g.DEFAULT_WORKER_DATA_TIMEOUT; "
                      "import app.gunicorn_conf")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    refusal = [line for line in done.stderr.splitlines() if "cannot start" in line]
    assert len(refusal) == 1  # one message, naming the version and what differs
    assert f"gunicorn {gunicorn.__version__}" in refusal[0]
    assert "DEFAULT_WORKER_DATA_TIMEOUT is missing" in refusal[0]


# --- kombu --------------------------------------------------------------------------------------

def test_the_installed_kombu_has_the_method_the_broker_transport_overrides():
    assert transport.incompatibilities(kombu_redis.Channel) == []


def test_a_kombu_without_the_overridden_method_is_refused_naming_it_and_the_version():
    class Channel:  # a kombu that renamed its connection parameters method
        def _connection_params(self, asynchronous=False): ...

        def _get_pool(self, asynchronous=False):
            return self._connection_params(asynchronous)

    with pytest.raises(transport.UnsupportedKombu) as refused:
        transport.check(Channel, "5.8.0")
    text = str(refused.value)
    assert "kombu 5.8.0" in text and transport.TESTED in text
    assert "kombu.transport.redis.Channel._connparams is missing" in text


def test_a_kombu_that_no_longer_builds_pools_from_the_overridden_method_is_refused():
    class Channel:
        def _connparams(self, asynchronous=False): ...

        def _get_pool(self, asynchronous=False):
            return {}

    assert transport.incompatibilities(Channel) == [
        "kombu.transport.redis.Channel._get_pool no longer builds its pool from _connparams"]


def test_a_celery_worker_refuses_to_start_on_a_kombu_lacking_the_method(redis_server):
    done = run_python(
        "import sys; from kombu.transport import redis as r; del r.Channel._connparams; "
        "from celery.__main__ import main; "
        "sys.argv = ['celery', '-A', 'workers.app', 'worker', '--loglevel', 'INFO']; main()",
        MINIS3_REDIS_URL=redis_server)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"kombu {kombu.__version__}" in done.stderr
    assert "Channel._connparams is missing" in done.stderr
    assert "ready." not in done.stdout + done.stderr
