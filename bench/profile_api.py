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

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from profile_s3 import recording, report
from run import MiB, ROOT, Backends, Stack, Store, human, many, random_file, small_body

GROUPS = ("web", "worker", "mongo", "client")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="MiB of the large upload (default: 256)")
    parser.add_argument("--small", type=int, default=1000, help="small uploads (default: 1,000)")
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second (default: 50)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "var/profile-api")
    parser.add_argument("--dir", type=Path, default=ROOT / "var")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="profile-api-", dir=args.dir)).resolve()
    backends = Backends(work / "backends")
    stack = None
    try:
        stack = Stack(work / "store", backends, web_workers=2, web_threads=16)
        store = Store.ready(stack, backends)
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
    finally:
        if stack is not None:
            stack.stop()
        backends.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
