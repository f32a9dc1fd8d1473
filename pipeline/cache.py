"""Per-process caches of rarely changing records (S3 credentials, bucket owners) that every process
drops at once when one of them changes.

A record is read on almost every S3 request and changes a few times a day: reading it from
MongoDB each time costs more than the request's own work on a small object. Each process keeps
what it read, tagged with the value of a shared generation counter in Redis at the time of its
read. Whoever changes such a record (revokes a key, deletes a bucket) writes MongoDB first and
then increments the counter; every later lookup in any process reads the counter (one Redis GET),
finds its entries older and reads MongoDB again. An entry read concurrently with a change carries
the counter's earlier value, so it is never trusted after the change. When Redis cannot be read,
nothing cached is trusted; when a change cannot increment the counter, entries still expire after
``ttl_s``, and the changer is told.

One request consults several records (its credential, its bucket, the bucket's ACL, policy and
versioning): inside ``one_read_per_request()`` the counter is read once and that value serves
the request's later lookups, for at most ``PIN_MAX_AGE_S`` (a long upload reads it again before
it writes the name) and never past a change the request makes itself. A request thus sees the
records as they were when it started, as if it had run a moment earlier; every later request
still sees every change.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Hashable, TypeVar

import redis

log = logging.getLogger(__name__)

T = TypeVar("T")
GENERATION_KEY = "minis3:records-generation"
PIN_MAX_AGE_S = 1.0
# counter key -> (value, monotonic time of the read), for the request running in this context
_PINNED: ContextVar[dict | None] = ContextVar("minis3_pinned_generations", default=None)


@contextmanager
def one_read_per_request():
    """Within the block, each counter is read from Redis once (see the module's docstring)."""
    token = _PINNED.set({})
    try:
        yield
    finally:
        _PINNED.reset(token)


class Generation:
    """The shared counter: ``current()`` None when Redis cannot say (trust no cache then)."""

    def __init__(self, redis_client: redis.Redis | None, key: str = GENERATION_KEY):
        self.redis = redis_client
        self.key = key

    def current(self) -> int | None:
        if self.redis is None:
            return None
        pinned = _PINNED.get()
        if pinned is not None:
            hit = pinned.get(self.key)
            if hit is not None and time.monotonic() - hit[1] < PIN_MAX_AGE_S:
                return hit[0]
        try:
            value = int(self.redis.get(self.key) or 0)
        except redis.RedisError:
            return None
        if pinned is not None:
            pinned[self.key] = (value, time.monotonic())
        return value

    def bump(self) -> bool:
        """After a change: every cached entry in every process is stale. False when Redis could not
        be told (caches then forget the record within their ``ttl_s``)."""
        if self.redis is None:
            return False
        pinned = _PINNED.get()
        if pinned is not None:  # the request's own change: its later lookups read the counter again
            pinned.pop(self.key, None)
        try:
            self.redis.incr(self.key)
            return True
        except redis.RedisError as exc:
            log.warning("could not announce a change of cached records (%r): processes may use the old "
                        "record for up to their cache's lifetime", exc)
            return False


class Lru:
    """A bounded map, safe across threads, that forgets its least recently used key first."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable):
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class GenerationCache:
    """Key -> value, trusted while the shared generation is unchanged and the entry is younger than
    ``ttl_s``. ``None`` values (unknown keys) are never kept."""

    def __init__(self, generation: Generation, ttl_s: float = 60.0, size: int = 4096):
        self.generation = generation
        self.ttl_s = ttl_s
        self._entries = Lru(size)  # key -> (value, generation, monotonic time of the read)

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        gen = self.generation.current()
        if gen is None:
            return load()
        now = time.monotonic()
        hit = self._entries.get(key)
        if hit is not None and hit[1] == gen and now - hit[2] < self.ttl_s:
            return hit[0]
        value = load()
        if value is not None:
            self._entries.put(key, (value, gen, now))
        return value


def records_generation(redis_url: str | None) -> Generation:
    """The shared counter on the store's Redis (no Redis configured: nothing is cached)."""
    if not redis_url:
        return Generation(None)
    return Generation(redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=3))
