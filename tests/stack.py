"""Real processes for integration and end-to-end tests: Redis, nx-27017, celery worker, gunicorn."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil
import requests

from config import embedded
from config.metrics import prepare_metrics_dir
from config.settings import Settings
from pipeline.access.credentials import S3Credentials
from pipeline.metadata.repositories import Metadata
from pipeline.storage.chunkio import fragment_name
from pipeline.storage.chunkstore import parse_name

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


class MultipartFile:
    """A multipart/form-data body streamed from a generator of bytes, with a known length."""

    def __init__(self, chunks, size: int, filename: str = "blob.bin", field: str = "file",
                 content_type: str = "application/octet-stream"):
        self.boundary = "minis3test" + uuid.uuid4().hex
        quoted = filename.replace('"', "%22")
        self.head = (f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                     f"filename=\"{quoted}\"\r\nContent-Type: {content_type}\r\n\r\n").encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.size = size
        self._parts = iter([self.head, *([] if size == 0 else [None]), self.tail])
        self._chunks = iter(chunks)
        self._buf = b""
        self._in_body = False

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def _next_piece(self) -> bytes:
        if self._in_body:
            piece = next(self._chunks, None)
            if piece is not None:
                return piece
            self._in_body = False
        part = next(self._parts, b"")
        if part is None:
            self._in_body = True
            return self._next_piece()
        return part

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return b"".join(iter(self._next_piece, b"")) if not self._buf else self._buf + self.read()
        if not self._buf:
            self._buf = memoryview(self._next_piece())
        out = bytes(self._buf[:n])
        self._buf = self._buf[n:]
        return out


def random_chunks(size: int, seed: int, piece: int = MiB):
    """Deterministic pseudo-random bytes, generated piece by piece (no whole file in memory)."""
    counter = 0
    left = size
    while left > 0:
        block = hashlib.shake_256(f"{seed}:{counter}".encode()).digest(min(piece, left))
        counter += 1
        left -= len(block)
        yield block


def random_bytes(size: int, seed: int) -> bytes:
    return b"".join(random_chunks(size, seed))


class Backends:
    """One private Redis per stack and one nx-27017 per test session."""

    def __init__(self, root: Path):
        self.root = root
        self.mongo_port = embedded.free_port()
        self.mongo = embedded.start_mongo(root / "mongo", self.mongo_port)
        self.mongo_url = f"mongodb://127.0.0.1:{self.mongo_port}/"

    def stop(self):
        embedded.stop(self.mongo)


class Stack:
    """Web (gunicorn), worker and optionally beat, as real processes sharing one Settings.

    By default a stack is a whole installation: its own Redis, database, spool and nodes under
    ``root``. Several stacks become hosts of one installation when they are given one existing
    ``redis_url`` and the same ``mongo_db``, ``spool_dir`` and ``nodes`` (as shared mounts would
    be), each with its own ``host_id``; each keeps its own port and ``var`` directory.
    """

    def __init__(self, root: Path, backends: Backends, web: bool = True, worker: bool = True,
                 beat: bool = False, s3: bool = False, redis_url: str | None = None, **overrides):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.redis_port: int | None = None
        self.redis: subprocess.Popen | None = None  # only a Redis this stack started, and stops
        if redis_url is None:
            self.redis_port = embedded.free_port()
            self.redis = embedded.start_redis(root / "var", self.redis_port)
            redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        port = embedded.free_port()
        base = dict(
            port=port, redis_url=redis_url, mongo_url=backends.mongo_url,
            mongo_db="t" + uuid.uuid4().hex[:12],
            nodes=tuple(root / f"nodes/node-{i}" for i in (1, 2, 3)), spool_dir=root / "spool",
            var_dir=root / "var", rate_limit="", web_workers=2, web_threads=8,
            s3_port=embedded.free_port(), secret_key=uuid.uuid4().hex,
        )
        base.update(overrides)
        self.settings = Settings().with_overrides(**base)
        self.env = {**os.environ, **self.settings.to_env(), "PYTHONUNBUFFERED": "1"}
        self.metrics_dir = prepare_metrics_dir(self.settings, self.env, clean=True, force_default=True)
        self.base_url = f"http://127.0.0.1:{port}"
        self.s3_url = f"http://127.0.0.1:{self.settings.s3_port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        if worker:
            self.start_worker()
        if beat:
            self.start("beat", [str(BIN / "celery"), "-A", "workers.app", *self.celery_options(), "beat",
                                "--loglevel", "INFO", "--schedule", str(root / "var/beat-schedule")])
        if web:
            self.start_web()
        if s3:
            self.start_s3()

    def celery_options(self) -> list[str]:
        return ["--quiet"] if self.settings.log_format == "json" else []  # no banner among JSON lines

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = self.root / f"{name}.log"
        self.logs[name] = log
        out = open(log, "ab")
        proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_web(self) -> None:
        proc = self.start("web", [str(BIN / "gunicorn"), "-c", "python:app.gunicorn_conf", "app.wsgi:app"])
        embedded.wait_for_port(self.settings.port, timeout=60, proc=proc)

    def start_s3(self) -> None:
        proc = self.start("s3", [str(BIN / "gunicorn"), "-c", "python:app.gunicorn_s3_conf", "app.s3wsgi:app"])
        embedded.wait_for_port(self.settings.s3_port, timeout=60, proc=proc)

    @contextmanager
    def metadata(self) -> Iterator[Metadata]:
        """This stack's metadata repository, for tests that look at MongoDB documents."""
        meta = Metadata.connect(self.settings.mongo_url, self.settings.mongo_db)
        try:
            yield meta
        finally:
            meta.client.close()

    def s3_credentials(self, tenant: str) -> tuple[str, str]:
        """A new S3 access key id and secret for ``tenant``, made as `minis3 keys create --s3` makes them."""
        with self.metadata() as meta:
            return S3Credentials(meta, self.settings.secret_key).create(tenant)

    def start_worker(self, concurrency: int = 2) -> None:
        log = self.root / "worker.log"
        seen = log.stat().st_size if log.exists() else 0  # a restarted worker appends to the same log
        # a node name of its own: workers that share a broker under one name confuse remote control
        self.worker_name = f"w{uuid.uuid4().hex[:6]}@{self.settings.host_id or socket.gethostname()}"
        proc = self.start("worker", [str(BIN / "celery"), "-A", "workers.app", *self.celery_options(), "worker",
                                     "-Q", "ingest,maintenance", "-c", str(concurrency), "--loglevel", "INFO",
                                     "-n", self.worker_name])
        deadline = time.monotonic() + 60
        while b"ready." not in self.logs["worker"].read_bytes()[seen:]:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not start:\n" + self.log("worker")[-3000:])
            time.sleep(0.1)

    def stop_proc(self, name: str) -> None:
        embedded.stop(self.procs.pop(name, None), timeout=15)

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace")

    def stop(self) -> None:
        for name in list(self.procs):
            self.stop_proc(name)
        embedded.stop(self.redis)

    # --- client helpers -----------------------------------------------------------------

    def url(self, path: str) -> str:
        return self.base_url + path

    def upload(self, data: bytes | None = None, name: str = "blob.bin", *, size: int | None = None,
               chunks=None, wait: bool = False, headers: dict | None = None) -> requests.Response:
        if data is not None:
            chunks, size = [data], len(data)
        body = MultipartFile(chunks, size, filename=name)
        h = {"Content-Type": body.content_type, **(headers or {})}
        return requests.post(self.url("/api/upload" + ("?wait=1" if wait else "")), data=body, headers=h,
                             timeout=600)

    def wait_status(self, file_id: str, want: str = "stored", timeout: float = 120.0,
                    headers: dict | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status = requests.get(self.url(f"/api/files/{file_id}/status"), headers=headers, timeout=30).json()
            if status["status"] == want or time.monotonic() > deadline:
                return status
            if status["status"] in ("failed", "deleted") and want != status["status"]:
                return status
            time.sleep(0.05)

    def put(self, data: bytes, name: str = "blob.bin", headers: dict | None = None) -> str:
        r = self.upload(data, name, headers=headers)
        assert r.status_code == 202, r.text
        file_id = r.json()["fileId"]
        assert self.wait_status(file_id, headers=headers)["status"] == "stored"
        return file_id

    def download(self, file_id: str, headers: dict | None = None) -> requests.Response:
        return requests.get(self.url(f"/api/files/{file_id}"), headers=headers, timeout=600)

    def chunk_files(self) -> dict[str, int]:
        """Chunk file path -> size, for every whole chunk and every fragment under every node
        (not the quarantine, not temporaries)."""
        out = {}
        for node in self.settings.nodes:
            for p in Path(node).glob("??/??/*"):
                if p.is_file() and parse_name(p.name) is not None:
                    out[str(p)] = p.stat().st_size
        return out


def copies_on_nodes(s: "Stack", hashes) -> Counter:
    """How many files of each name (a whole copy, or fragment ``<hash>.<i>``) of these chunks."""
    wanted = set(hashes)
    return Counter(name for name in (Path(p).name for p in s.chunk_files()) if name.partition(".")[0] in wanted)


def each_once(s: "Stack", hashes) -> Counter:
    """Every fragment of every one of these chunks exactly once, in the stack's layout."""
    k, m = s.settings.ec_layout
    return Counter({fragment_name(h, i, k, m): 1 for h in set(hashes) for i in range(k + m)})


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    """Poll until ``predicate()`` is truthy and return that value; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


class PeakRss(threading.Thread):
    """Largest RSS of any one process in each group (gunicorn master + workers, celery + pool),
    sampled every ``every`` seconds until ``stop()`` (or the end of a ``with`` block)."""

    def __init__(self, root_pids: dict[str, int], every: float = 0.02):
        super().__init__(daemon=True)
        self.roots = {name: psutil.Process(pid) for name, pid in root_pids.items()}
        self.peak: dict[str, int] = {name: 0 for name in root_pids}
        self.every = every
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            for name, root in self.roots.items():
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    continue
                for p in procs:
                    try:
                        self.peak[name] = max(self.peak[name], p.memory_info().rss)
                    except psutil.NoSuchProcess:
                        pass
            self.stop_event.wait(self.every)

    def mib(self) -> dict[str, float]:
        return {name: peak / MiB for name, peak in self.peak.items()}

    def stop(self) -> dict[str, float]:
        self.stop_event.set()
        self.join()
        return self.mib()

    def __enter__(self) -> "PeakRss":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
