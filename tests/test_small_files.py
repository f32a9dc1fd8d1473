"""Small files are listed in Redis and ingested by one drain task at a time (workers/queue.py)."""
from __future__ import annotations

import concurrent.futures as cf

import pytest
import redis
import requests
from celery import Celery

from tests.stack import Stack, random_bytes, wait_for
from workers.queue import SmallFileQueue


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory, backends):
    s = Stack(tmp_path_factory.mktemp("small"), backends)
    yield s
    s.stop()


def statuses(stack, ids):
    return [requests.get(stack.url(f"/api/files/{i}/status"), timeout=30).json()["status"] for i in ids]


def test_many_small_uploads_are_all_ingested_and_readable(small_stack):
    blobs = [random_bytes(4096 + i, 7000 + i) for i in range(60)]
    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(small_stack.upload, blobs))
    ids = [r.json()["fileId"] for r in answers]
    assert all(r.status_code == 202 for r in answers)
    wait_for(lambda: statuses(small_stack, ids) == ["stored"] * len(ids), timeout=120, what="all stored")
    for file_id, data in zip(ids, blobs):
        assert small_stack.download(file_id).content == data
    client = redis.Redis.from_url(small_stack.settings.redis_url)
    assert client.llen(SmallFileQueue.LIST) == 0
    log = small_stack.log("worker")
    assert all(f"ingest {i} " in log for i in ids)  # one ingest line per file, as for a task each


def test_files_listed_while_no_drain_runs_are_drained_by_beats_sweep(small_stack):
    client = redis.Redis.from_url(small_stack.settings.redis_url)
    wait_for(lambda: not client.exists(SmallFileQueue.FLAG), what="the last drain to end")
    client.set(SmallFileQueue.FLAG, "1", ex=600)  # a drain that died while holding the flag
    blobs = [random_bytes(3000, 7100 + i) for i in range(5)]
    ids = [small_stack.upload(b).json()["fileId"] for b in blobs]
    assert client.llen(SmallFileQueue.LIST) == 5
    assert statuses(small_stack, ids) == ["queued"] * 5  # listed, and nothing drains them
    client.delete(SmallFileQueue.FLAG)  # the dead drain's flag expires
    Celery(broker=small_stack.settings.redis_url).send_task("minis3.requeue_stuck", queue="maintenance")
    wait_for(lambda: statuses(small_stack, ids) == ["stored"] * 5, timeout=120, what="the sweep's drain")
    assert [small_stack.download(i).content for i in ids] == blobs
