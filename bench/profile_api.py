#!/usr/bin/env python3
"""Where the /api front end's CPU goes under the benchmark's /api loads: py-spy profiles.

The companion of bench/profile_s3.py for ``POST /api/upload``: records the web gunicorn (master and
workers), the worker, the MongoDB stand-in and this process with py-spy (samples on a CPU only).

    .venv/bin/python bench/profile_api.py                 # 256 MiB upload, 1,000 x 4 KiB uploads
    .venv/bin/python bench/profile_api.py --size 64 --small 200

Loads: one large upload by ``curl -F`` (to stored), 4 KiB uploads from 8 clients (to stored).
Prints, per load and group, the functions with the most samples and writes the collapsed stacks
(flamegraph input) under --out.
"""
from __future__ import annotations

import sys

from profile_s3 import profiled_store, recording, report
from run import MiB, human, many, random_file, small_body

GROUPS = ("web", "worker", "mongo", "client")


def main(argv: list[str] | None = None) -> int:
    with profiled_store("api", __doc__, argv, "the large upload", "small uploads") as (args, stack, store, work):
        size = args.size * MiB
        source = work / "big.bin"
        random_file(source, size)
        loads = []
        with recording(store, args.out, "upload", args.rate, GROUPS):
            store.upload(source, measure=False)
        loads.append(("upload", f"curl -F of {human(size)} to stored"))

        def send(session, i):
            r = session.post(store.url("/api/upload"), timeout=60,
                             files={"file": (f"s{i}.bin", small_body(i, 4096, b"profile-api"))})
            assert r.status_code == 202, r.text
            return r.json()["fileId"]

        with recording(store, args.out, "small", args.rate, GROUPS):
            ids = many(args.small, send)
            for file_id in ids:
                stack.wait_status(file_id, timeout=300)
        loads.append(("small", f"{args.small} uploads of 4 KiB from 8 clients, to stored"))
        report(loads, args.out, GROUPS, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
