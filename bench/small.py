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

import os
import shutil
import sys
import time
from pathlib import Path

CODE = os.environ.get("CODE") or str(Path(__file__).resolve().parent.parent)
sys.path[:0] = [CODE, os.path.join(CODE, "bench")]

from run import ROOT, S3Front, Store, many, round_robin, s3_small_puts, small_body, settle  # noqa: E402
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

        take = round_robin([s3.new_client() for _ in range(8)])
        settle()
        small = s3_small_puts(store, take, N, EACH, salt)
        print(f"{label} S3: readable {N / small.readable_s:.0f}/s, stored {N / small.stored_s:.0f}/s; "
              f"ms/object to readable {per_file(small.cpu_readable.seconds)}; "
              f"to stored {per_file(small.cpu_stored.seconds)}", flush=True)
        s3.close()
    finally:
        stack.stop()
        backends.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "this")
