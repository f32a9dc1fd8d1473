"""Thread pools of the data path, one of each per process: made on first use in the process that
uses it, never inherited across a fork (gunicorn and Celery fork their workers, and a parent's
pool threads do not exist in the child)."""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

_pools: dict[tuple[str, int], ThreadPoolExecutor] = {}
_lock = threading.Lock()


def process_pool(name: str, threads: int) -> ThreadPoolExecutor:
    """This process's pool called ``name`` (its threads are named after it)."""
    key = (name, os.getpid())
    pool = _pools.get(key)
    if pool is None:
        with _lock:
            pool = _pools.get(key)
            if pool is None:
                pool = _pools[key] = ThreadPoolExecutor(threads, thread_name_prefix=name)
    return pool
