"""kombu's Redis transport, surviving a Redis restart while tasks are unacknowledged.

When the broker connection drops, Celery 5.7 collects the connection, which detaches its
transport, and then closes it; closing a channel (or acking a task that finishes afterwards)
builds a Redis client from the detached transport, raises ``AttributeError``, and the worker
exits with an "Unrecoverable error". Here that case raises a Redis ``ConnectionError`` instead,
which kombu and Celery already treat as a lost connection: the worker reconnects, and the
unacknowledged messages stay in Redis to come back after the visibility timeout (beat re-queues
stuck files well before that; ingest is idempotent, so a second delivery is harmless).

Neither Celery nor kombu offers a setting or signal for this, so the transport overrides kombu's
private ``Channel._connparams`` (every Redis client and pool of a channel is built from it). It
is the one of the kombu range pinned in pyproject.toml (``TESTED``): ``check`` verifies, before a
Celery app uses this transport, that the method is there with the expected parameters and that
kombu still builds its pools through it, and refuses to start otherwise.
"""
from __future__ import annotations

import inspect

import kombu
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

from config.pinned import refuse_untested

TESTED = "kombu>=5.7,<5.8"
CONNPARAMS = "kombu.transport.redis.Channel._connparams"
CONNPARAMS_PARAMS = ("self", "asynchronous")


class UnsupportedKombu(RuntimeError):
    """The installed kombu lacks, or has changed, the private method this transport overrides."""


def incompatibilities(channel_class: type) -> list[str]:
    """What differs in kombu's Redis ``Channel`` from what ``Channel`` below relies on."""
    method = inspect.getattr_static(channel_class, "_connparams", None)
    if not inspect.isfunction(method):
        return [f"{CONNPARAMS} is missing"]
    problems = []
    params = tuple(inspect.signature(method).parameters)
    if params != CONNPARAMS_PARAMS:
        problems.append(f"{CONNPARAMS} takes ({', '.join(params)}), expected ({', '.join(CONNPARAMS_PARAMS)})")
    get_pool = inspect.getattr_static(channel_class, "_get_pool", None)
    if not inspect.isfunction(get_pool) or "_connparams" not in get_pool.__code__.co_names:
        problems.append("kombu.transport.redis.Channel._get_pool no longer builds its pool from _connparams")
    return problems


def check(channel_class: type = kombu_redis.Channel, version: str = kombu.__version__) -> None:
    """Raise ``UnsupportedKombu`` with one message listing every difference."""
    refuse_untested(incompatibilities(channel_class), UnsupportedKombu, "kombu", version, TESTED,
                    "workers/transport.py overrides")


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous=False):
        if getattr(getattr(self, "connection", None), "client", None) is None:
            raise RedisConnectionError("the broker connection was reset; this channel is closed")
        return super()._connparams(asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
