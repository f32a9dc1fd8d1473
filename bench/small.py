#!/usr/bin/env python3
"""The two small-file loads alone, for a quick comparison of two versions in one sitting.

1,000 uploads of 4 KiB through ``POST /api/upload`` and 1,000 S3 PUTs of 4 KiB (boto3, default
configuration), each from 8 clients, against the benchmark's store (2 web processes of 16
threads, worker concurrency 2). Prints acknowledged/readable and stored rates with the CPU per
file of each process group (ms, user + system).

    .venv/bin/python bench/small.py new
    # the version before, from its own checkout (its code first on the path):
    git worktree add /tmp/old <rev> && CODE=/tmp/old PYTHONPATH=/tmp/old .venv/bin/python /tmp/old/bench/small.py old

(``bench/small.py`` must exist in that checkout; else copy this file there.)
"""
from __future__ import annotations

import itertools
import os
import shutil
import sys
import threading
import time
from pathlib import Path

CODE = os.environ.get("CODE") or str(Path(__file__).resolve().parent.parent)
sys.path[:0] = [CODE, os.path.join(CODE, "bench")]

from run import S3_BUCKET, ROOT, S3Front, Store, many, small_body, settle  # noqa: E402
from tests.stack import Backends, Stack  # noqa: E402

N, EACH = 1000, 4096


def per_file(cpu: dict[str, float]) -> str:
    return " ".join(f"{k}={v * 1000 / N:.2f}" for k, v in cpu.items())


def main(label: str) -> None:
    work = ROOT / f"var/small-{label}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    backends = Backends(work / "backends")
    stack = Stack(work / "store", backends, web_workers=2, web_threads=16, s3=True)
    try:
        store = Store.ready(stack, backends)
        s3 = S3Front(store, work)
        salt = os.urandom(8)

        def upload(session, i):
            r = session.post(store.url("/api/upload"), timeout=60,
                             files={"file": (f"s{i}.bin", small_body(i, EACH, salt))})
            if r.status_code != 202:
                raise RuntimeError(f"upload answered {r.status_code}: {r.text[:300]}")
            return r.json()["fileId"]

        settle()
        with store.cpu() as cpu:
            started = time.perf_counter()
            ids = many(N, upload)
            acked = time.perf_counter() - started
            stored = store.wait_stored(ids) - started
        print(f"{label} /api: acknowledged {N / acked:.0f}/s, stored {N / stored:.0f}/s; ms/file {per_file(cpu.seconds)}",
              flush=True)

        clients = itertools.cycle([s3.new_client() for _ in range(8)])  # made beforehand
        lock = threading.Lock()

        def take():
            with lock:
                return next(clients)

        def put(client, i):
            r = client.put_object(Bucket=S3_BUCKET, Key=f"small/{i:05d}", Body=small_body(i, EACH, salt))
            return r["ResponseMetadata"]["RequestId"]

        settle()
        with store.cpu() as cpu:
            started = time.perf_counter()
            with store.cpu() as cpu_readable:
                request_ids = many(N, put, make=take)
                readable = time.perf_counter() - started
            stored_at, statuses = store.wait_requests(request_ids)
        if set(statuses.values()) != {"stored"}:
            raise RuntimeError(f"ingests ended otherwise than stored: {sorted(set(statuses.values()))}")
        print(f"{label} S3: readable {N / readable:.0f}/s, stored {N / (stored_at - started):.0f}/s; "
              f"ms/object to readable {per_file(cpu_readable.seconds)}; to stored {per_file(cpu.seconds)}",
              flush=True)
        s3.close()
    finally:
        stack.stop()
        backends.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "this")
