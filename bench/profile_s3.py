#!/usr/bin/env python3
"""Where the S3 front end's CPU goes under the benchmark's S3 loads: py-spy profiles.

Starts the store as bench/run.py does, then, for each load, records the process groups with
py-spy (only samples on a CPU: idle threads are left out): the S3 gunicorn (master and workers),
the worker (celery and its pool), the MongoDB stand-in and this process (the boto3 client).

    .venv/bin/python bench/profile_s3.py                 # 256 MiB each way, 1,000 x 4 KiB PUTs
    .venv/bin/python bench/profile_s3.py --size 64 --small 200

Loads: boto3 upload_file (default configuration), download_file of it, small PUTs from 8 boto3
clients. Prints, per load and group, the functions with the most samples (own and inclusive) and
writes the collapsed stacks (flamegraph input) under --out.
"""
from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

from run import (MiB, ROOT, S3_BUCKET, Backends, S3Front, Stack, Store, human, many,
                 random_file, small_body)

PY_SPY = Path(sys.executable).parent / "py-spy"
GROUPS = ("s3", "worker", "mongo", "client")


@contextmanager
def recording(store: Store, out: Path, load: str, rate: int, groups=GROUPS, gil: bool = False):
    """py-spy on each group during the block; writes ``<out>/<load>-<group>.txt`` (collapsed stacks).
    ``gil``: only samples of a thread holding the GIL (Python at work; a thread blocked in a system
    call the sampler does not know as idle is left out)."""
    roots = {name: pid for name, pid in store.cpu_roots().items() if name in groups}
    spies = {}
    for name, pid in roots.items():
        path = out / f"{load}-{name}.txt"
        # the client started every server: its own process only
        tree = [] if name == "client" else ["--subprocesses"]
        spies[name] = (path, subprocess.Popen(
            [str(PY_SPY), "record", "--pid", str(pid), *tree, "--format", "raw", "--rate", str(rate),
             "--output", str(path), *(["--gil"] if gil else [])], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        for path, spy in spies.values():
            spy.send_signal(signal.SIGINT)
        for name, (path, spy) in spies.items():
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
            if not path.exists():
                print(f"  py-spy wrote nothing for {name}: {spy.stderr.read().decode(errors='replace')[-300:]}")


def frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rpartition(" ")
    names = []
    for frame in stack.split(";"):
        if frame.startswith("process "):  # --subprocesses: a frame per process
            continue
        func, _, where = frame.partition(" (")
        names.append(f"{func} ({where.rsplit(':', 1)[0]})" if where else func)
    return names, int(count)


# a sample is charged to its deepest frame in one of these (the project, then the S3 client)
OWNERS = ("app/", "pipeline/", "workers/", "s3transfer/", "boto3/", "botocore/")
# py-spy's idle detection misses threads blocked in these on this machine: their samples are waits
# (for a lock, a queue, a socket, MongoDB's answer), not CPU, and are counted apart
BLOCKING = ("Condition.wait (threading.py)", "_worker (concurrent/futures/thread.py)",
            "PeriodicExecutor._run (pymongo/periodic_executor.py)", "EpollSelector.select (selectors.py)",
            "Arbiter.wait_for_signals (gunicorn/arbiter.py)", "_epoll.poll (kombu/utils/eventio.py)",
            "Connection._recv (billiard/connection.py)", "Thread._wait_for_tstate_lock (threading.py)",
            "NetworkingInterface.recv_into (pymongo/network_layer.py)", "receive_data (pymongo/network_layer.py)",
            "SocketBuffer._read_from_socket (redis/_parsers/socket.py)", "SocketIO.readinto (socket.py)",
            "poll_wait_for_socket.<locals>.do_poll (urllib3/util/wait.py)", "sleep")


def summary(path: Path, top: int) -> str:
    own, owner, total, waiting = Counter(), Counter(), 0, 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        names, count = frames(line)
        if not names:
            continue
        if names[-1] in BLOCKING:
            waiting += count
            continue
        total += count
        own[names[-1]] += count
        mine = [n for n in names if any(f"({prefix}" in n for prefix in OWNERS)]
        owner[f"{mine[-1]} -> {names[-1]}" if mine else f"(elsewhere) {names[-1]}"] += count
    if not total:
        return "  (no samples)"
    lines = [f"  {total} samples on a CPU ({waiting} more blocked in a wait or a socket read, left out)"]
    for title, counter in (("own", own), ("deepest project or client frame -> own", owner)):
        lines.append(f"  top {top} by {title} samples:")
        lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in counter.most_common(top)]
    return "\n".join(lines)


def report(loads: list[tuple[str, str]], out: Path, groups, top: int) -> None:
    """Print, per load and group, the summary of what py-spy recorded."""
    for load, title in loads:
        print(f"\n=== {title}")
        for group in groups:
            path = out / f"{load}-{group}.txt"
            if path.exists():
                print(f"--- {group} ({path.relative_to(ROOT) if path.is_relative_to(ROOT) else path})")
                print(summary(path, top))


@contextmanager
def profiled_store(name: str, doc: str, argv: list[str] | None, large: str, small: str, s3: bool = False):
    """The options every profile script takes, and a store started as bench/run.py starts it, under
    a work directory of its own; yields (options, stack, store, work directory) and stops it all."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help=f"MiB of {large} (default: 256)")
    parser.add_argument("--small", type=int, default=1000, help=f"{small} (default: 1,000)")
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second (default: 50)")
    parser.add_argument("--gil", action="store_true",
                        help="only samples of threads holding the GIL (Python's own CPU, no blocked calls)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / f"var/profile-{name}")
    parser.add_argument("--dir", type=Path, default=ROOT / "var")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"profile-{name}-", dir=args.dir)).resolve()
    backends = Backends(work / "backends")
    stack = None
    try:
        stack = Stack(work / "store", backends, web_workers=2, web_threads=16, s3=s3)
        yield args, stack, Store.ready(stack, backends), work
    finally:
        if stack is not None:
            stack.stop()
        backends.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    with profiled_store("s3", __doc__, argv, "the large object", "small PUTs", s3=True) as (args, _, store, work):
        s3 = S3Front(store, work)
        size = args.size * MiB
        source, target = work / "big.bin", work / "down.bin"
        random_file(source, size)
        loads = []

        with recording(store, args.out, "upload", args.rate, gil=args.gil):
            s3.client.upload_file(str(source), S3_BUCKET, "big")
        loads.append(("upload", f"boto3 upload_file {human(size)}"))
        s3.wait_file_stored("big")  # the object's ingest follows its completion: not part of the download
        with recording(store, args.out, "download", args.rate, gil=args.gil):
            s3.client.download_file(S3_BUCKET, "big", str(target))
        loads.append(("download", f"boto3 download_file {human(size)}"))

        clients = [s3.new_client() for _ in range(8)]
        with recording(store, args.out, "small", args.rate, gil=args.gil):
            many(args.small, lambda c, i: c.put_object(Bucket=S3_BUCKET, Key=f"small/{i}",
                                                       Body=small_body(i, 4096, b"profile")),
                 make=lambda: clients.pop())
        loads.append(("small", f"{args.small} PUTs of 4 KiB from 8 boto3 clients"))
        s3.close()

        report(loads, args.out, GROUPS, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
