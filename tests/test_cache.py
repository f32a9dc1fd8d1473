"""Cached records (S3 credentials, bucket owners): a change in one process reaches every cache."""
from __future__ import annotations

import redis

from pipeline.access.credentials import S3Credentials
from pipeline import cache as cache_module
from pipeline.cache import GENERATION_KEY, Generation, GenerationCache, one_read_per_request


def counting(value):
    calls = []

    def load():
        calls.append(1)
        return value
    return load, calls


def test_an_entry_is_trusted_until_the_generation_moves(settings):
    client = redis.Redis.from_url(settings.redis_url)
    reader, writer = GenerationCache(Generation(client)), Generation(client)
    load, calls = counting({"tenant": "acme"})
    assert reader.get("k", load) == {"tenant": "acme"} and reader.get("k", load) == {"tenant": "acme"}
    assert len(calls) == 1
    assert writer.bump()  # another process changed a record
    assert reader.get("k", load) == {"tenant": "acme"} and len(calls) == 2
    missing, missing_calls = counting(None)
    reader.get("unknown", missing)
    reader.get("unknown", missing)
    assert len(missing_calls) == 2  # unknown keys are not kept


def test_without_redis_nothing_is_trusted():
    down = Generation(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    cache = GenerationCache(down)
    load, calls = counting("v")
    assert cache.get("k", load) == "v" and cache.get("k", load) == "v" and len(calls) == 2
    assert not down.bump()


def test_entries_expire_even_when_no_change_is_announced(settings):
    cache = GenerationCache(Generation(redis.Redis.from_url(settings.redis_url)), ttl_s=0.0)
    load, calls = counting("v")
    cache.get("k", load)
    cache.get("k", load)
    assert len(calls) == 2


def test_revocation_and_bucket_deletion_reach_other_processes_caches(store):
    server = S3Credentials(store.meta, "server secret", Generation(store.redis))
    operator = S3Credentials(store.meta, "server secret", Generation(store.redis))
    key_id, secret = operator.create("acme")
    assert server.lookup(key_id) == (secret, "acme")
    operator.revoke(key_id)
    assert server.lookup(key_id) is None

    serving, other = store.object_names(), store.object_names()
    serving.create_bucket("acme", "cached")
    assert serving.bucket("acme", "cached").name == "cached"
    other.delete_bucket("acme", "cached")
    other.create_bucket("globex", "cached")  # the name taken again by another tenant
    assert serving.bucket("globex", "cached").tenant == "globex"


class CountingRedis(redis.Redis):
    """A client that counts the GETs it sends."""

    gets = 0

    def get(self, name):
        CountingRedis.gets += 1
        return super().get(name)


def test_a_request_reads_the_generation_once(settings):
    client = CountingRedis.from_url(settings.redis_url)
    cache, other = GenerationCache(Generation(client)), redis.Redis.from_url(settings.redis_url)
    load, calls = counting("v")
    cache.get("k", load)
    before = CountingRedis.gets
    with one_read_per_request():
        for _ in range(5):
            assert cache.get("k", load) == "v"
        other.incr(GENERATION_KEY)  # another process's change while this request runs: seen by the next request
        assert cache.get("k", load) == "v" and len(calls) == 1
    assert CountingRedis.gets - before == 1
    assert cache.get("k", load) == "v" and len(calls) == 2


def test_a_request_sees_its_own_change_at_once(settings):
    client = redis.Redis.from_url(settings.redis_url)
    generation = Generation(client)
    cache = GenerationCache(generation)
    load, calls = counting("v")
    with one_read_per_request():
        cache.get("k", load)
        generation.bump()
        cache.get("k", load)
    assert len(calls) == 2


def test_a_long_request_reads_the_generation_again(settings, monkeypatch):
    cache = GenerationCache(Generation(redis.Redis.from_url(settings.redis_url)))
    load, calls = counting("v")
    with one_read_per_request():
        cache.get("k", load)
        redis.Redis.from_url(settings.redis_url).incr(GENERATION_KEY)  # another process's change
        monkeypatch.setattr(cache_module, "PIN_MAX_AGE_S", 0.0)
        cache.get("k", load)
    assert len(calls) == 2
