#!/usr/bin/env python3
"""Benchmark: the store against what this machine's disk and nginx do with the same bytes.

One run, one disk (everything under --dir): baselines first (a raw 1 MiB-block write with one
fsync; nginx WebDAV PUT and GET through curl), then the store as real processes (gunicorn,
celery worker, Redis, nx-27017). Prints a table and writes it as JSON under bench/results/.
Each large transfer runs --tries times (distinct content for the store) and the fastest counts:
on a shared 2-core machine other processes slow some tries down.

Beside every throughput figure: the CPU seconds per GiB (per file, for small files) that each
process group used meanwhile, from /proc (user + system, children that exited included): web
(gunicorn master + workers), worker (celery + pool), Redis, the MongoDB stand-in, nginx for its
baselines, and the client (this process and the curl it runs).

    .venv/bin/python bench/run.py            # 1 GiB / 4 GiB, 8 x 64 MiB, 1,000 x 4 KiB
    .venv/bin/python bench/run.py --quick    # small sizes: a smoke run in about a minute

The figures are wall-clock on a shared 2-core machine: compare figures within one run.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import itertools
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import psutil  # noqa: E402
import requests  # noqa: E402

from config import embedded  # noqa: E402
from procgroups import CpuTimes, PeakRss, group_members  # noqa: E402  (bench/ is this script's directory)
from pipeline.metadata.repositories import Metadata  # noqa: E402
from pipeline.namespace.objects import name_id  # noqa: E402
from tests.s3clients import REGION  # noqa: E402
from tests.stack import Backends, Stack  # noqa: E402

MB = 1_000_000
MiB = 1 << 20
GiB = 1 << 30
POLL_S = 0.01
MB_LIMIT_MIB = 150 * MB / MiB  # issue 9: RSS <= 150 MB (decimal), shown in MiB like every RSS figure
GROUPS = ("web", "s3", "worker", "redis", "mongo", "nginx", "client")


@dataclass(frozen=True)
class Sizes:
    big: int
    huge: int
    parallel_each: int
    parallel_n: int
    small_each: int
    small_n: int


FULL = Sizes(big=GiB, huge=4 * GiB, parallel_each=64 * MiB, parallel_n=8, small_each=4096, small_n=1000)
QUICK = Sizes(big=64 * MiB, huge=256 * MiB, parallel_each=8 * MiB, parallel_n=8, small_each=4096, small_n=200)


@dataclass
class Figure:
    name: str
    value: float | None
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    target: str | None = None
    ratio: float | None = None
    met: bool | None = None
    cpu: dict[str, float] | None = None  # CPU of each process group, in cpu_unit
    cpu_unit: str | None = None  # "s/GiB", or "ms/file" for small files


@dataclass
class Try:
    """One run of a measured transfer: wall seconds and CPU seconds of each process group."""
    seconds: float
    cpu: dict[str, float]


def cpu_per_gib(cpu: dict[str, float], nbytes: int) -> dict[str, float]:
    return {group: seconds / (nbytes / GiB) for group, seconds in cpu.items()}


def cpu_per_file(cpu: dict[str, float], files: int) -> dict[str, float]:
    return {group: seconds * 1000 / files for group, seconds in cpu.items()}


def human(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


# --- inputs ---------------------------------------------------------------------------------

def random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes in 1 MiB blocks; returns their SHA-256."""
    sha = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(MiB, left))
            sha.update(block)
            f.write(block)
            left -= len(block)
    return sha.hexdigest()


def settle() -> None:
    """Flush dirty pages (the inputs just written) so that they do not slow the next measurement."""
    os.sync()


def rate(size: int, seconds: float | None) -> float | None:
    return None if not seconds else size / MB / seconds


# --- baselines ------------------------------------------------------------------------------

def raw_write(path: Path, size: int) -> Try:
    """Write ``size`` bytes in 1 MiB blocks and fsync once."""
    block = os.urandom(MiB)
    with CpuTimes({"client": os.getpid()}) as cpu:
        started = time.perf_counter()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for _ in range(size // MiB):
                os.write(fd, block)
            os.fsync(fd)
        finally:
            os.close(fd)
        seconds = time.perf_counter() - started
    path.unlink()
    settle()
    return Try(seconds, cpu.seconds)


NGINX_CONF = """\
worker_processes 2;
daemon off;
{user}
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        location /dav/ {{
            dav_methods PUT DELETE;
            create_full_put_path on;
            client_max_body_size 0;
        }}
        # an S3 endpoint that costs nothing, for boto3's own ceiling on this machine: multipart
        # create and complete answer fixed XML, parts are read and dropped, HEAD and ranged GETs
        # are served from files under www/sink/
        location /sink/ {{
            client_max_body_size 0;
            if ($request_method = POST) {{
                return 200 '<InitiateMultipartUploadResult><Bucket>sink</Bucket><Key>k</Key><UploadId>u</UploadId></InitiateMultipartUploadResult>';
            }}
            if ($request_method = PUT) {{
                add_header ETag '"{etag}"' always;
                return 200;
            }}
        }}
    }}
}}
"""


class Nginx:
    """nginx with WebDAV PUT on a free loopback port, with a config written to a temp dir."""

    def __init__(self, directory: Path):
        self.dir = directory
        (directory / "www/dav").mkdir(parents=True)
        self.port = embedded.free_port()
        user = "user root;" if os.geteuid() == 0 else ""
        conf = directory / "nginx.conf"
        conf.write_text(NGINX_CONF.format(d=directory, port=self.port, user=user, etag="0" * 32))
        (directory / "www/sink").mkdir()
        self.proc = subprocess.Popen([shutil.which("nginx"), "-c", str(conf), "-p", str(directory)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        embedded.wait_for_port(self.port, timeout=15, proc=self.proc)
        self.base_url = f"http://127.0.0.1:{self.port}/dav"
        self.sink_dir = directory / "www/sink"

    def boto3_sink(self):
        """boto3, default configuration, pointed at the sink (bucket ``sink``)."""
        return boto3.session.Session().client("s3", endpoint_url=f"http://127.0.0.1:{self.port}",
                                              region_name=REGION, aws_access_key_id="AKMSSINK",
                                              aws_secret_access_key="sink")

    def roots(self) -> dict[str, int]:
        return {"nginx": self.proc.pid, "client": os.getpid()}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                embedded.stop(self.proc)


def curl(*args: str) -> tuple[int, float, str]:
    """Run curl; returns (HTTP status, wall seconds, response body)."""
    with tempfile.NamedTemporaryFile() as out:
        started = time.perf_counter()
        done = subprocess.run(["curl", "-sS", "-H", "Expect:", "-o", out.name, "-w", "%{http_code}", *args],
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"curl {' '.join(args)} failed: {done.stderr.strip()}")
        return int(done.stdout), seconds, Path(out.name).read_text(errors="replace")


def curl_get(url: str) -> tuple[int, float]:
    started = time.perf_counter()
    done = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url],
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"curl GET {url} failed: {done.stderr.strip()}")
    code, size = done.stdout.split()
    return int(code), seconds, int(size)


def many(count: int, send, workers: int = 8, make=requests.Session) -> list:
    """``send(session, i)`` for i in range(count), from ``workers`` threads each with a session of its
    own from ``make()`` (a keep-alive ``requests.Session`` by default)."""
    local = threading.local()

    def call(i):
        if not hasattr(local, "session"):
            local.session = make()
        return send(local.session, i)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(call, range(count)))


def small_body(i: int, size: int, salt: bytes) -> bytes:
    return hashlib.shake_256(salt + i.to_bytes(8, "big")).digest(size)


def round_robin(clients: list):
    """``make`` for ``many``: each thread takes the next of these clients (made beforehand: a
    client's set-up is not what is measured)."""
    cycle = itertools.cycle(clients)
    lock = threading.Lock()

    def take():
        with lock:
            return next(cycle)
    return take


def put_small_objects(take, bucket: str, n: int, each: int, salt: bytes) -> list[str]:
    """``n`` S3 PUTs of ``each`` bytes (``small/<i>``) from 8 threads; their request ids."""
    def put(client, i):
        r = client.put_object(Bucket=bucket, Key=f"small/{i:05d}", Body=small_body(i, each, salt))
        return r["ResponseMetadata"].get("RequestId")  # the sink sends none
    return many(n, put, make=take)


# --- the store ------------------------------------------------------------------------------

class IngestLog:
    """The worker's ``ingest <id> request=<rid> status=<s> ... <seconds>s`` lines, read incrementally."""

    LINE = re.compile(rb"ingest ([0-9a-f]{24}) request=(\S+) status=(\w+) .* ([0-9.]+)s\r?$", re.M)

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.seen: dict[str, tuple[str, float]] = {}
        self.requests: dict[str, tuple[str, str]] = {}  # request id -> (file id, status)
        self.lock = threading.Lock()

    def read(self) -> None:
        with self.lock:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
            end = data.rfind(b"\n") + 1
            self.offset += end
            for m in self.LINE.finditer(data[:end]):
                file_id, status = m.group(1).decode(), m.group(3).decode()
                self.seen[file_id] = (status, float(m.group(4)))
                self.requests[m.group(2).decode()] = (file_id, status)

    def results(self, ids: list[str]) -> dict[str, tuple[str, float]]:
        self.read()
        return {i: self.seen[i] for i in ids if i in self.seen}

    def by_request(self, request_ids: list[str]) -> dict[str, tuple[str, str]]:
        """(file id, status) of the ingest of each of these requests' files that has ended."""
        self.read()
        return {r: self.requests[r] for r in request_ids if r in self.requests}


@dataclass
class Upload:
    file_id: str
    to_202: Try
    to_stored: Try
    gap: float  # seconds from the 202 to stored


class Store:
    def __init__(self, stack: Stack, backends: Backends):
        self.stack = stack
        self.backends = backends
        self.http = requests.Session()
        self.ingest_log = IngestLog(stack.logs["worker"])

    @classmethod
    def ready(cls, stack: Stack, backends: Backends) -> "Store":
        """The store of a stack (web, S3 web and worker, 2 processes each besides their master)
        once every process is up and idle: no start-up inside a measurement."""
        store = cls(stack, backends)
        expected = {name: 1 + 2 for name in ("web", "worker", "s3") if name in stack.procs}
        store.wait_processes(**expected)
        store.wait_quiet()
        return store

    def url(self, path: str) -> str:
        return self.stack.url(path)

    def cpu(self, measure: bool = True):
        """A CPU meter over every process group of the store and the client (or none)."""
        return CpuTimes(self.cpu_roots()) if measure else contextlib.nullcontext(CpuTimes({}))

    def upload(self, path: Path, measure: bool = True) -> Upload:
        """curl -F the file, wait until it is stored; with ``measure``, the CPU of both spans."""
        with self.cpu(measure) as cpu_stored:
            started = time.perf_counter()
            with self.cpu(measure) as cpu_202:
                code, to_202, body = curl("-F", f"file=@{path};type=application/octet-stream",
                                          self.url("/api/upload"))
                answered = time.perf_counter()
            if code != 202:
                raise RuntimeError(f"upload answered {code}: {body[:500]}")
            file_id = json.loads(body)["fileId"]
            stored_at = self.wait_stored([file_id])
        self.confirm_stored([file_id])
        return Upload(file_id, Try(to_202, cpu_202.seconds), Try(stored_at - started, cpu_stored.seconds),
                      stored_at - answered)

    def status(self, file_id: str) -> str:
        return self.http.get(self.url(f"/api/files/{file_id}/status"), timeout=60).json()["status"]

    def wait_stored(self, ids: list[str], timeout: float = 3600) -> float:
        """Wait for the worker's ingest line of every id; returns when the last one appeared.

        Watching the worker's log puts no load on the store (polling the status API at a useful
        rate would take a good part of a core on this machine); that line is written just after
        the file became ``stored``, so the figure is, if anything, a little late. The status API
        then confirms it, untimed.
        """
        seen, done = self._wait_lines(self.ingest_log.results, ids, timeout)
        failed = {i: st for i, (st, _) in done.items() if st != "stored"}
        if failed:
            raise RuntimeError(f"ingest ended otherwise than stored: {list(failed.items())[:5]}")
        return seen

    def wait_requests(self, request_ids: list[str], timeout: float = 3600) -> tuple[float, dict[str, str]]:
        """Wait for the ingest line of the file each request (an S3 PUT) queued, as ``wait_stored``;
        returns when the last one appeared, and each request's file id and ingest status."""
        seen, done = self._wait_lines(self.ingest_log.by_request, request_ids, timeout)
        return seen, {rid: status for rid, (_, status) in done.items()}

    @staticmethod
    def _wait_lines(lookup, keys: list[str], timeout: float) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        while True:
            done = lookup(keys)
            if len(done) == len(keys):
                return time.perf_counter(), done
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(keys) - len(done)} file(s) not ingested after {timeout}s")
            time.sleep(POLL_S)

    def confirm_stored(self, ids: list[str]) -> None:
        wrong = [i for i in ids if self.status(i) != "stored"]
        if wrong:
            raise RuntimeError(f"{len(wrong)} file(s) not stored according to the status API")

    def stored_count(self) -> int:
        return self.http.get(self.url("/api/stats"), timeout=60).json()["files"]["byStatus"]["stored"]

    def node_bytes(self) -> int:
        return sum(self.stack.chunk_files().values())

    def worker_seconds(self, file_id: str) -> float:
        """The worker's own ingest time (IngestReport.seconds) from its log line."""
        return self.ingest_log.results([file_id])[file_id][1]

    def verify_download(self, file_id: str, sha256: str, size: int) -> None:
        """Untimed: the bytes of a download hash to what was uploaded."""
        sha = hashlib.sha256()
        got = 0
        with self.http.get(self.url(f"/api/files/{file_id}"), stream=True, timeout=600) as r:
            r.raise_for_status()
            for piece in r.iter_content(MiB):
                sha.update(piece)
                got += len(piece)
        if got != size or sha.hexdigest() != sha256:
            raise RuntimeError(f"download of {file_id} is not what was uploaded")

    def roots(self) -> dict[str, int]:
        """The store's web, worker and S3 web processes (peak RSS)."""
        return {name: self.stack.procs[name].pid for name in ("web", "worker", "s3") if name in self.stack.procs}

    def wait_processes(self, timeout: float = 60, **expected: int) -> None:
        """Wait until each group has its expected number of processes (gunicorn forks its workers
        after it listens)."""
        deadline = time.monotonic() + timeout
        while True:
            counts = {name: len(pids) for name, pids in group_members(self.roots()).items()}
            if all(counts[name] >= n for name, n in expected.items()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes of the store after {timeout}s: {counts}, expected {expected}")
            time.sleep(0.1)

    def wait_quiet(self, timeout: float = 60, every: float = 0.5, busy: float = 0.05) -> None:
        """Wait until no process group of the store uses more than ``busy`` of a core (gunicorn's
        workers import the application after they are forked): no start-up inside a measurement."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with CpuTimes({k: v for k, v in self.cpu_roots().items() if k != "client"}) as cpu:
                time.sleep(every)
            if max(cpu.seconds.values()) <= busy * every:
                return

    def cpu_roots(self) -> dict[str, int]:
        return {**self.roots(), "redis": self.stack.redis.pid, "mongo": self.backends.mongo.pid,
                "client": os.getpid()}


# --- the S3 front end --------------------------------------------------------------------------

S3_BUCKET = "bench"
AWS = str(Path(sys.executable).parent / "aws")


@dataclass
class SmallPuts:
    readable_s: float  # from the first PUT sent to the last answered
    stored_s: float  # to the last one's ingest
    cpu_readable: CpuTimes
    cpu_stored: CpuTimes


def s3_small_puts(store: "Store", take, n: int, each: int, salt: bytes) -> SmallPuts:
    """``n`` small S3 PUTs (``put_small_objects``) timed to readable and to stored, with the CPU of
    each process group over each span; every ingest must end stored."""
    with store.cpu() as cpu_stored:
        started = time.perf_counter()
        with store.cpu() as cpu_readable:
            request_ids = put_small_objects(take, S3_BUCKET, n, each, salt)
            answered = time.perf_counter()
        stored_at, statuses = store.wait_requests(request_ids)
    not_stored = {r: st for r, st in statuses.items() if st != "stored"}
    if not_stored:
        raise RuntimeError(f"small S3 PUTs whose ingest ended otherwise than stored: {list(not_stored.items())[:5]}")
    return SmallPuts(answered - started, stored_at - started, cpu_readable, cpu_stored)


class S3Front:
    """The store's S3 port as boto3 (default configuration: multipart uploads and ranged downloads
    through the transfer manager, CRC32 checksums on) and aws-cli use it."""

    def __init__(self, store: Store, work: Path):
        stack = store.stack
        self.url = stack.s3_url
        self.keys = stack.s3_credentials("bench")
        self.meta = Metadata.connect(stack.settings.mongo_url, stack.settings.mongo_db)
        self.client = self.new_client()
        self.client.create_bucket(Bucket=S3_BUCKET)
        home = work / "aws"
        home.mkdir()
        for name in ("config", "credentials"):  # none of the user's settings
            (home / name).write_text("")
        self.aws_env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
                        "AWS_ACCESS_KEY_ID": self.keys[0], "AWS_SECRET_ACCESS_KEY": self.keys[1],
                        "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": str(home / "config"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials")}

    def new_client(self):
        """A boto3 client with the default configuration, on a session of its own (boto3's default
        session is not thread-safe)."""
        return boto3.session.Session().client("s3", endpoint_url=self.url, region_name=REGION,
                                              aws_access_key_id=self.keys[0],
                                              aws_secret_access_key=self.keys[1])

    def close(self) -> None:
        self.meta.client.close()

    def aws(self, *args: str) -> float:
        """Run aws-cli against the S3 port; returns its wall seconds."""
        started = time.perf_counter()
        done = subprocess.run([AWS, "--endpoint-url", self.url, *args], env=self.aws_env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"aws {' '.join(args)} failed: {done.stderr.strip()[-800:]}")
        return seconds

    def file_status(self, key: str) -> str | None:
        """The status of the file an object's name points at (None: no such object)."""
        doc = self.meta.namespace.get_object_name(name_id(S3_BUCKET, key))
        f = self.meta.files.get_file(doc["file"]) if doc else None
        return f.status if f else None

    def wait_file_stored(self, key: str, timeout: float = 3600) -> float:
        deadline = time.monotonic() + timeout
        while (status := self.file_status(key)) != "stored":
            if status not in ("queued", "processing") or time.monotonic() > deadline:
                raise RuntimeError(f"the file of s3://{S3_BUCKET}/{key} is {status}")
            time.sleep(POLL_S)
        return time.perf_counter()

    def verify(self, key: str, sha256: str, size: int) -> None:
        """Untimed: a GET of the whole object hashes to what was uploaded."""
        sha = hashlib.sha256()
        got = 0
        for piece in self.client.get_object(Bucket=S3_BUCKET, Key=key)["Body"].iter_chunks(MiB):
            sha.update(piece)
            got += len(piece)
        if got != size or sha.hexdigest() != sha256:
            raise RuntimeError(f"GET s3://{S3_BUCKET}/{key} is not what was uploaded")


def file_sha256(path: Path) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(MiB):
            sha.update(block)
            size += len(block)
    return sha.hexdigest(), size


@dataclass(frozen=True)
class Baselines:
    put: Figure
    get: Figure
    small: Figure | None
    judged: bool  # False: no nginx, the targets are shown but not judged


def s3_figures(report: Report, store: Store, work: Path, sizes: Sizes, tries: int, log, base: Baselines) -> None:
    """boto3 and aws-cli through the S3 port, 1 GiB each way and 1,000 small PUTs.

    Each large transfer has content of its own (nothing deduplicates against an earlier one).
    A multipart upload is readable when CompleteMultipartUpload answers (its parts wait in the
    spool; completion links them into the object's file and queues that file); it is stored when
    the worker has ingested that file, and the "to stored" CPU is all that the upload cost. Small PUTs are readable when answered (read-after-write), stored when
    the worker's ingest line of each has appeared; every object is then read back byte-exact.
    """
    s3 = S3Front(store, work)
    big = human(sizes.big)
    try:
        log(f"S3: boto3 upload_file {big} and download_file (x{tries}, distinct content)")
        readable, stored, busy, keys = [], [], [], []
        source = work / "s3-big.bin"
        with PeakRss({"s3": store.roots()["s3"], "worker": store.roots()["worker"]}) as rss:
            for i in range(tries):
                sha = random_file(source, sizes.big)
                settle()
                key = f"boto3/big-{i}"
                with store.cpu() as cpu_stored:
                    with store.cpu() as cpu_readable:
                        started = time.perf_counter()
                        s3.client.upload_file(str(source), S3_BUCKET, key)
                        answered = time.perf_counter()
                    stored_at = s3.wait_file_stored(key)
                readable.append(Try(answered - started, cpu_readable.seconds))
                stored.append(Try(stored_at - started, cpu_stored.seconds))
                busy.append(max(0.0, stored_at - answered))
                keys.append((key, sha))
                source.unlink()
        for key, sha in keys:
            s3.verify(key, sha, sizes.big)
        report.throughput(f"S3 boto3 upload_file {big}: to readable", readable, baseline=base.put.name,
                          baseline_value=base.put.value, target=">= 0.5x nginx PUT", ratio_min=0.5,
                          judged=base.judged)
        report.throughput(f"S3 boto3 upload_file {big}: to stored", stored, baseline=base.put.name,
                          baseline_value=base.put.value)
        report.notes["samples"][f"S3 boto3 upload_file {big}: stored after completion"] = \
            [round(b, 3) for b in busy]
        report.figure(f"S3 boto3 upload_file {big}: stored after completion",
                      busy[min(range(tries), key=lambda i: readable[i].seconds)], "s")
        for name in ("s3", "worker"):
            report.figure(f"peak RSS {name}, S3 boto3 upload_file {big}", rss.mib()[name], "MiB",
                          target="<= 150 MB", value_max=MB_LIMIT_MIB)
        if rss.not_reset:
            report.notes["rss_s3"] = f"could not reset the RSS high-water mark of pids {rss.not_reset}"

        gets = []
        target = work / "s3-down.bin"
        for key, sha in keys:
            settle()
            with store.cpu() as cpu:
                started = time.perf_counter()
                s3.client.download_file(S3_BUCKET, key, str(target))
                seconds = time.perf_counter() - started
            gets.append(Try(seconds, cpu.seconds))
            if file_sha256(target) != (sha, sizes.big):
                raise RuntimeError(f"download_file of {key} is not what was uploaded")
            target.unlink()
        report.throughput(f"S3 boto3 download_file {big}, verified", gets, baseline=base.get.name,
                          baseline_value=base.get.value, target=">= 0.7x nginx GET", ratio_min=0.7,
                          judged=base.judged)

        log(f"S3: aws s3 cp {big} up and down (x{tries}, distinct content)")
        ups, downs = [], []
        for i in range(tries):
            sha = random_file(source, sizes.big)
            settle()
            url = f"s3://{S3_BUCKET}/awscli/big-{i}"
            with store.cpu() as cpu:
                seconds = s3.aws("s3", "cp", "--only-show-errors", str(source), url)
            ups.append(Try(seconds, cpu.seconds))
            source.unlink()
            s3.wait_file_stored(f"awscli/big-{i}")  # untimed: the download does not share the CPU with its ingest
            settle()
            with store.cpu() as cpu:
                seconds = s3.aws("s3", "cp", "--only-show-errors", url, str(target))
            downs.append(Try(seconds, cpu.seconds))
            if file_sha256(target) != (sha, sizes.big):
                raise RuntimeError(f"aws s3 cp of {url} came back otherwise than it went up")
            target.unlink()
        report.throughput(f"S3 aws s3 cp {big} up: to readable", ups, baseline=base.put.name,
                          baseline_value=base.put.value)
        report.throughput(f"S3 aws s3 cp {big} down, verified", downs, baseline=base.get.name,
                          baseline_value=base.get.value)

        n, each = sizes.small_n, sizes.small_each
        log(f"S3: {n} PUTs of {human(each)} from 8 boto3 clients")
        take = round_robin([s3.new_client() for _ in range(8)])
        salt = os.urandom(8)
        settle()
        small = s3_small_puts(store, take, n, each, salt)

        def get_small(client, i):
            return client.get_object(Bucket=S3_BUCKET, Key=f"small/{i:05d}")["Body"].read() == \
                small_body(i, each, salt)

        if not all(many(n, get_small, make=take)):
            raise RuntimeError("a small S3 object does not read back as it was put")
        name = f"S3 PUT {n} x {human(each)} (8 boto3 clients)"
        report.files_per_second(f"{name}: readable", n, small.readable_s, small.cpu_readable.seconds,
                                unit="objects/s", baseline=base.small.name if base.small else None,
                                baseline_value=base.small.value if base.small else None,
                                target=">= 300 objects/s", value_min=300)
        report.files_per_second(f"{name}: to stored", n, small.stored_s, small.cpu_stored.seconds,
                                unit="objects/s", baseline=base.small.name if base.small else None,
                                baseline_value=base.small.value if base.small else None)
    finally:
        s3.close()


# --- the run ----------------------------------------------------------------------------------

NO_NGINX = "nginx is missing (apt-get install nginx-light): no nginx baselines in this run"


def figure(figures: list, name, value, unit, baseline=None, baseline_value=None, target=None,
           ratio_min=None, ratio_max=None, ratio=None, value_max=None, value_min=None, cpu=None,
           cpu_unit=None, judged=True) -> Figure:
    """Append a figure; ``judged=False`` shows the target but leaves met empty (its baseline is missing)."""
    if ratio is None and value is not None and baseline_value:
        ratio = value / baseline_value
    met = None
    if ratio is not None and ratio_min is not None:
        met = ratio >= ratio_min
    if ratio is not None and ratio_max is not None:
        met = ratio <= ratio_max
    if value is not None and value_max is not None:
        met = value <= value_max
    if value is not None and value_min is not None:
        met = value >= value_min
    if not judged and target:
        met, target = None, f"{target} (not judged: no nginx)"
    f = Figure(name, value, unit, baseline, baseline_value, target, ratio, met, cpu, cpu_unit)
    figures.append(f)
    return f


class Report:
    """The figures of a run and the samples behind them."""

    def __init__(self, figures: list[Figure], notes: dict, size: int):
        self.figures = figures
        self.notes = notes
        self.size = size  # of a large transfer, unless told otherwise

    def figure(self, name, value, unit, **kwargs) -> Figure:
        return figure(self.figures, name, value, unit, **kwargs)

    def fastest(self, name: str, runs: list[Try], size: int) -> Try:
        """The fastest of the tries (the others were slowed by whatever else ran on the machine)."""
        self.notes["samples"][name] = [round(rate(size, r.seconds), 1) for r in runs]
        self.notes["cpu_samples"][name] = [{g: round(v, 3) for g, v in cpu_per_gib(r.cpu, size).items()}
                                           for r in runs]
        return min(runs, key=lambda r: r.seconds)

    def throughput(self, name: str, runs: list[Try], size: int | None = None, **targets) -> Figure:
        """MB/s of the fastest try, with the CPU per GiB of each process group in that same try."""
        size = size or self.size
        best = self.fastest(name, runs, size)
        return self.figure(name, rate(size, best.seconds), "MB/s", cpu=cpu_per_gib(best.cpu, size),
                           cpu_unit="s/GiB", **targets)

    def files_per_second(self, name: str, files: int, seconds: float, cpu: dict[str, float],
                         unit: str = "files/s", **targets) -> Figure:
        return self.figure(name, files / seconds, unit, cpu=cpu_per_file(cpu, files),
                           cpu_unit=f"ms/{unit.split('/')[0].rstrip('s')}", **targets)


def run(sizes: Sizes, work: Path, log, tries: int) -> tuple[list[Figure], dict]:
    figures: list[Figure] = []
    notes: dict = {"samples": {}, "cpu_samples": {}}
    samples = notes["samples"]
    log(f"writing {tries} x {human(sizes.big)} of random input")
    bigs = [work / f"big-{i}.bin" for i in range(tries)]
    shas = [random_file(p, sizes.big) for p in bigs]
    big = bigs[0]
    settle()

    report = Report(figures, notes, sizes.big)
    throughput, files_per_second = report.throughput, report.files_per_second

    log(f"baseline: raw write of {human(sizes.big)} in 1 MiB blocks + one fsync (x{tries})")
    raw = throughput(f"raw write {human(sizes.big)} (1 MiB blocks, one fsync)",
                     [raw_write(work / "raw.bin", sizes.big) for _ in bigs])

    nginx_put = nginx_get = nginx_small = None
    small_name = f"{sizes.small_n} x {human(sizes.small_each)} (8 clients)"
    if shutil.which("nginx") is None:
        notes["nginx"] = NO_NGINX
        log(f"*** {NO_NGINX}: ratios below are to the raw write and nginx targets are not judged")
    else:
        log(f"baseline: nginx WebDAV PUT and GET through curl (x{tries})")
        nginx = Nginx(work / "nginx")
        puts, gets = [], []
        try:
            for i, path in enumerate(bigs):
                settle()
                with CpuTimes(nginx.roots()) as cpu:
                    code, put_s, body = curl("-T", str(path), f"{nginx.base_url}/big-{i}.bin")
                if code not in (201, 204):
                    raise RuntimeError(f"nginx PUT answered {code}: {body[:300]}")
                puts.append(Try(put_s, cpu.seconds))
                settle()
                with CpuTimes(nginx.roots()) as cpu:
                    code, get_s, got = curl_get(f"{nginx.base_url}/big-{i}.bin")
                if code != 200 or got != sizes.big:
                    raise RuntimeError(f"nginx GET answered {code} with {got} bytes")
                gets.append(Try(get_s, cpu.seconds))
            # boto3's transfer manager against an endpoint that does no work: what the client itself
            # reaches on this machine, beside the S3 rows (the same calls, the same defaults)
            sink = nginx.boto3_sink()
            sink_ups, sink_downs = [], []
            for i, path in enumerate(bigs):
                settle()
                with CpuTimes(nginx.roots()) as cpu:
                    started = time.perf_counter()
                    sink.upload_file(str(path), "sink", f"up-{i}.bin")
                    seconds = time.perf_counter() - started
                sink_ups.append(Try(seconds, cpu.seconds))
                os.link(path, nginx.sink_dir / f"big-{i}.bin")
                target = work / "sink-down.bin"
                settle()
                with CpuTimes(nginx.roots()) as cpu:
                    started = time.perf_counter()
                    sink.download_file("sink", f"big-{i}.bin", str(target))
                    seconds = time.perf_counter() - started
                sink_downs.append(Try(seconds, cpu.seconds))
                if file_sha256(target) != (shas[i], sizes.big):
                    raise RuntimeError("boto3 download_file from nginx came back otherwise")
                target.unlink()
            salt = os.urandom(8)
            with CpuTimes(nginx.roots()) as cpu_small:
                started = time.perf_counter()
                codes = many(sizes.small_n, lambda s, i: s.put(f"{nginx.base_url}/small/{i}",
                                                               data=small_body(i, sizes.small_each, salt),
                                                               timeout=60).status_code)
                small_s = time.perf_counter() - started
            if set(codes) - {201, 204}:
                raise RuntimeError(f"nginx small PUTs answered {sorted(set(codes))}")
            # the same small PUTs from 8 boto3 clients, as in the S3 row, to the sink: the
            # client's own ceiling for that row
            take_sink = round_robin([nginx.boto3_sink() for _ in range(8)])
            with CpuTimes(nginx.roots()) as cpu_sink_small:
                started = time.perf_counter()
                put_small_objects(take_sink, "sink", sizes.small_n, sizes.small_each, salt)
                sink_small_s = time.perf_counter() - started
        finally:
            nginx.stop()
            shutil.rmtree(work / "nginx", ignore_errors=True)
        nginx_put = throughput(f"nginx PUT {human(sizes.big)} (curl -T)", puts)
        nginx_get = throughput(f"nginx GET {human(sizes.big)} (curl)", gets)
        nginx_small = files_per_second(f"nginx PUT {small_name}", sizes.small_n, small_s, cpu_small.seconds)
        throughput(f"boto3 upload_file {human(sizes.big)} to an nginx sink (the client's ceiling)", sink_ups)
        throughput(f"boto3 download_file {human(sizes.big)} from nginx (the client's ceiling)", sink_downs)
        files_per_second(f"boto3 PUT {small_name} to an nginx sink (the client's ceiling)", sizes.small_n,
                         sink_small_s, cpu_sink_small.seconds, unit="objects/s")
    judged = nginx_put is not None
    put_base = nginx_put or raw
    get_base = nginx_get or raw

    log("starting the store: gunicorn (/api and S3), celery worker, Redis, nx-27017")
    backends = Backends(work / "backends")
    stack = None
    try:
        stack = Stack(work / "store", backends, web_workers=2, web_threads=16, s3=True)
        store = Store.ready(stack, backends)

        log(f"store: upload {human(sizes.big)} and download it (x{tries}, distinct content)")
        ups, gets = [], []
        with PeakRss(store.roots()) as rss_big:
            for path in bigs:
                settle()
                up = store.upload(path)
                with store.cpu() as cpu:
                    code, get_s, got = curl_get(store.url(f"/api/files/{up.file_id}"))
                if code != 200 or got != sizes.big:
                    raise RuntimeError(f"download answered {code} with {got} bytes")
                ups.append(up)
                gets.append(Try(get_s, cpu.seconds))
        for up, sha in zip(ups, shas):
            store.verify_download(up.file_id, sha, sizes.big)
        first_worker_s = store.worker_seconds(ups[0].file_id)
        throughput(f"upload {human(sizes.big)}: to the 202", [u.to_202 for u in ups],
                   baseline=put_base.name, baseline_value=put_base.value)
        single = throughput(f"upload {human(sizes.big)}: to stored", [u.to_stored for u in ups],
                            baseline=put_base.name, baseline_value=put_base.value,
                            target=">= 0.6x nginx PUT", ratio_min=0.6, judged=judged)
        counted = min(ups, key=lambda u: u.to_stored.seconds)
        samples[f"upload {human(sizes.big)}: stored after its 202"] = [round(u.gap, 3) for u in ups]
        figure(figures, f"upload {human(sizes.big)}: stored after its 202", counted.gap, "s",
               target="<= 0.3 s", value_max=0.3)
        figure(figures, f"upload {human(sizes.big)}: web CPU to stored", single.cpu["web"], "s/GiB",
               target="<= 2.5 s/GiB", value_max=2.5)
        throughput(f"download {human(sizes.big)}, verified", gets, baseline=get_base.name,
                   baseline_value=get_base.value, target=">= 0.8x nginx GET", ratio_min=0.8, judged=judged)
        figure(figures, f"first ingest of {human(sizes.big)}: worker time", first_worker_s, "s")
        for path in bigs[1:]:
            path.unlink()

        log("store: upload the same content again")
        before = store.node_bytes()
        settle()
        again = store.upload(big, measure=False)
        added = store.node_bytes() - before
        again_worker_s = store.worker_seconds(again.file_id)
        figure(figures, "re-upload: bytes added under nodes/", added, "bytes", target="0", value_max=0)
        figure(figures, "re-upload: worker time", again_worker_s, "s", "first ingest: worker time",
               first_worker_s, "<= 0.1x first ingest", ratio_max=0.1)

        n, each = sizes.parallel_n, sizes.parallel_each
        log(f"store: {n} parallel uploads of {human(each)}")
        paths = [work / f"par-{i}.bin" for i in range(n)]
        for p in paths:
            random_file(p, each)
        settle()
        with store.cpu() as cpu_par:
            with ThreadPoolExecutor(n) as pool:
                uploads = list(pool.map(lambda p: store.upload(p, measure=False), paths))
        par_s = max(u.to_stored.seconds for u in uploads)  # all start together: the last one stored ends the run
        for p in paths:
            p.unlink()
        figure(figures, f"{n} parallel uploads of {human(each)}: aggregate to stored", rate(n * each, par_s),
               "MB/s", single.name, single.value, ">= single upload", ratio_min=1.0,
               cpu=cpu_per_gib(cpu_par.seconds, n * each), cpu_unit="s/GiB")

        log(f"store: {sizes.small_n} uploads of {human(sizes.small_each)}")
        salt = os.urandom(8)
        stored_before = store.stored_count()
        settle()

        def send_small(session, i):
            r = session.post(store.url("/api/upload"), timeout=60,
                             files={"file": (f"s{i}.bin", small_body(i, sizes.small_each, salt))})
            if r.status_code != 202:
                raise RuntimeError(f"small upload answered {r.status_code}: {r.text[:300]}")
            return r.json()["fileId"]

        with store.cpu() as cpu_small:
            started = time.perf_counter()
            small_ids = many(sizes.small_n, send_small)
            small_s = store.wait_stored(small_ids) - started
        if store.stored_count() != stored_before + sizes.small_n:
            raise RuntimeError("the status API does not count every small file as stored")
        files_per_second(f"{small_name}: to stored", sizes.small_n, small_s, cpu_small.seconds,
                         baseline=nginx_small.name if judged else None,
                         baseline_value=nginx_small.value if judged else None,
                         target=">= 300 files/s", value_min=300)

        s3_figures(report, store, work, sizes, tries, log,
                   Baselines(put_base, get_base, nginx_small if judged else None, judged))

        big.unlink()
        huge = work / "huge.bin"
        log(f"store: upload {human(sizes.huge)} (peak RSS)")
        random_file(huge, sizes.huge)
        settle()
        with PeakRss(store.roots()) as rss_huge:
            up = store.upload(huge)
        huge.unlink()
        throughput(f"upload {human(sizes.huge)}: to stored", [up.to_stored], size=sizes.huge,
                   baseline=single.name, baseline_value=single.value)
        for name in ("web", "worker"):
            small_peak, large_peak = rss_big.mib()[name], rss_huge.mib()[name]
            figure(figures, f"peak RSS {name}, {human(sizes.big)} up+down", small_peak, "MiB",
                   target="<= 150 MB", value_max=MB_LIMIT_MIB)
            figure(figures, f"peak RSS {name}, {human(sizes.huge)} upload", large_peak, "MiB",
                   f"peak RSS {name}, {human(sizes.big)}", small_peak, "<= 150 MB, flat with size",
                   value_max=MB_LIMIT_MIB)
        not_reset = sorted(set(rss_big.not_reset + rss_huge.not_reset))
        if not_reset:
            notes["rss"] = f"could not reset the RSS high-water mark of pids {not_reset}: peaks since their start"
    finally:
        if stack is not None:
            stack.stop()
        backends.stop()
    return figures, notes


def table(figures: list[Figure]) -> str:
    def num(v):
        if v is None:
            return "-"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" if v != int(v) else f"{int(v)}"

    def cpu_num(v):
        return "-" if v is None else f"{v:.2f}" if v < 10 else f"{v:,.1f}"

    rows = [("figure", "value", "unit", "baseline", "ratio", "target", "met", "CPU", *GROUPS)]
    for f in figures:
        base = "-" if f.baseline_value is None else f"{num(f.baseline_value)} ({f.baseline})"
        ratio = "-" if f.ratio is None else f"{f.ratio:.2f}x"
        met = "-" if f.met is None else ("yes" if f.met else "NO")
        cpu = [cpu_num((f.cpu or {}).get(g)) for g in GROUPS]
        rows.append((f.name, num(f.value), f.unit, base, ratio, f.target or "-", met, f.cpu_unit or "-", *cpu))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> dict:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "memory_gib": round(psutil.virtual_memory().total / GiB, 1), "load_avg": os.getloadavg()}


def run_table_script(prefix: str, description: str, run, quick_size: int = 64 * MiB,
                     add_arguments=None, argv: list[str] | None = None) -> int:
    """The driver of a one-table benchmark script (bench/ec.py, bench/chunking.py): options,
    a work directory under --dir, ``run(size, work, log, args) -> figures``, the table printed and
    written as JSON to ``<--out>/<prefix>-<UTC time>[-quick].json``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{human(quick_size)} instead of 1 GiB")
    parser.add_argument("--dir", type=Path, default=ROOT / "var")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    size = quick_size if args.quick else GiB
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-", dir=args.dir)).resolve()
    started = time.time()
    host = machine()

    def log(msg: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {msg}", flush=True)

    try:
        figures = run(size, work, log, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(figures)
    print()
    print(text)
    print(f"\nload average {host['load_avg'][0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    out = args.out / f"{prefix}-{stamp}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps({"started": stamp, "size": size, "machine": host,
                               "seconds": round(time.time() - started, 1),
                               "figures": [asdict(f) for f in figures], "load_avg_at_end": os.getloadavg(),
                               "table": text}, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes for a fast smoke run")
    parser.add_argument("--dir", type=Path, default=ROOT / "var",
                        help="where the run's files go (its disk is the one measured; default: var/)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results", help="where the JSON goes")
    parser.add_argument("--tries", type=int, default=2,
                        help="runs of each large transfer (distinct content); the fastest counts (default: 2)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=args.dir)).resolve()
    started = time.time()
    host = machine()

    def log(msg: str) -> None:
        print(f"[{time.time() - started:7.1f}s] {msg}", flush=True)

    log(f"working in {work} ({'quick' if args.quick else 'full'} sizes)")
    try:
        figures, notes = run(sizes, work, log, max(1, args.tries))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(figures)
    print()
    print(text)
    print(f"\nlarge transfers: the fastest of {max(1, args.tries)} tries (every try is in the JSON's samples); "
          f"load average {host['load_avg'][0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print("CPU: seconds per GiB (ms per file for files/s) of each process group during that figure's own "
          "try, user + system from /proc, exited children included")
    for note in ("nginx", "rss", "rss_s3"):
        if note in notes:
            print(f"\n*** note: {notes[note]}")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    out = args.out / f"{stamp}{'-quick' if args.quick else ''}.json"
    result = {"started": stamp, "quick": args.quick, "sizes": asdict(sizes), "machine": host,
              "seconds": round(time.time() - started, 1), "figures": [asdict(f) for f in figures],
              "load_avg_at_end": os.getloadavg(),
              "notes": notes, "table": text}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
