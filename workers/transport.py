"""kombu's Redis transport, surviving a Redis restart while tasks are unacknowledged.

When the broker connection drops, Celery 5.7 collects the connection, which detaches its
transport, and then closes it; closing a channel (or acking a task that finishes afterwards)
builds a Redis client from the detached transport, raises ``AttributeError``, and the worker
exits with an "Unrecoverable error". Here that case raises a Redis ``ConnectionError`` instead,
which kombu and Celery already treat as a lost connection: the worker reconnects, and the
unacknowledged messages stay in Redis to come back after the visibility timeout (beat re-queues
stuck files well before that; ingest is idempotent, so a second delivery is harmless).
"""
from __future__ import annotations

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous=False):
        if getattr(getattr(self, "connection", None), "client", None) is None:
            raise RedisConnectionError("the broker connection was reset; this channel is closed")
        return super()._connparams(asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
