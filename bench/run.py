#!/usr/bin/env python3
"""Benchmark: the store against what this machine's disk and nginx do with the same bytes.

One run, one disk (everything under --dir): baselines first (a raw 1 MiB-block write with one
fsync; nginx WebDAV PUT and GET through curl), then the store as real processes (gunicorn,
celery worker, Redis, nx-27017). Prints a table and writes it as JSON under bench/results/.
Each large transfer runs --tries times (distinct content for the store) and the fastest counts:
on a shared 2-core machine other processes slow some tries down.

    .venv/bin/python bench/run.py            # 1 GiB / 4 GiB, 8 x 64 MiB, 1,000 x 4 KiB
    .venv/bin/python bench/run.py --quick    # small sizes: a smoke run in about a minute

The figures are wall-clock on a shared 2-core machine: compare figures within one run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
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

import psutil  # noqa: E402
import requests  # noqa: E402

from config import embedded  # noqa: E402
from tests.stack import Backends, PeakRss, Stack  # noqa: E402

MB = 1_000_000
MiB = 1 << 20
GiB = 1 << 30
POLL_S = 0.01


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

def raw_write(path: Path, size: int) -> float:
    """Seconds to write ``size`` bytes in 1 MiB blocks and fsync once."""
    block = os.urandom(MiB)
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
    return seconds


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
        conf.write_text(NGINX_CONF.format(d=directory, port=self.port, user=user))
        self.proc = subprocess.Popen([shutil.which("nginx"), "-c", str(conf), "-p", str(directory)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        embedded.wait_for_port(self.port, timeout=15, proc=self.proc)
        self.base_url = f"http://127.0.0.1:{self.port}/dav"

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


def many(count: int, send, workers: int = 8) -> list:
    """``send(session, i)`` for i in range(count), from ``workers`` threads each with a keep-alive session."""
    local = threading.local()

    def call(i):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return send(local.session, i)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(call, range(count)))


def small_body(i: int, size: int, salt: bytes) -> bytes:
    return hashlib.shake_256(salt + i.to_bytes(8, "big")).digest(size)


# --- the store ------------------------------------------------------------------------------

class IngestLog:
    """The worker's ``ingest <id> ... status=<s> ... <seconds>s`` lines, read incrementally."""

    LINE = re.compile(rb"ingest ([0-9a-f]{24}) .*status=(\w+) .* ([0-9.]+)s\r?$", re.M)

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.seen: dict[str, tuple[str, float]] = {}
        self.lock = threading.Lock()

    def results(self, ids: list[str]) -> dict[str, tuple[str, float]]:
        with self.lock:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
            end = data.rfind(b"\n") + 1
            self.offset += end
            for m in self.LINE.finditer(data[:end]):
                self.seen[m.group(1).decode()] = (m.group(2).decode(), float(m.group(3)))
            return {i: self.seen[i] for i in ids if i in self.seen}


class Store:
    def __init__(self, stack: Stack):
        self.stack = stack
        self.http = requests.Session()
        self.ingest_log = IngestLog(stack.logs["worker"])

    def url(self, path: str) -> str:
        return self.stack.url(path)

    def upload(self, path: Path) -> tuple[str, float, float]:
        """curl -F the file; returns (file id, seconds to the 202, seconds to stored)."""
        started = time.perf_counter()
        code, to_202, body = curl("-F", f"file=@{path};type=application/octet-stream", self.url("/api/upload"))
        if code != 202:
            raise RuntimeError(f"upload answered {code}: {body[:500]}")
        file_id = json.loads(body)["fileId"]
        stored_at = self.wait_stored([file_id])
        self.confirm_stored([file_id])
        return file_id, to_202, stored_at - started

    def status(self, file_id: str) -> str:
        return self.http.get(self.url(f"/api/files/{file_id}/status"), timeout=60).json()["status"]

    def wait_stored(self, ids: list[str], timeout: float = 3600) -> float:
        """Wait for the worker's ingest line of every id; returns when the last one appeared.

        Watching the worker's log puts no load on the store (polling the status API at a useful
        rate would take a good part of a core on this machine); that line is written just after
        the file became ``stored``, so the figure is, if anything, a little late. The status API
        then confirms it, untimed.
        """
        deadline = time.monotonic() + timeout
        while True:
            done = self.ingest_log.results(ids)
            if len(done) == len(ids):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(ids) - len(done)} file(s) not ingested after {timeout}s")
            time.sleep(POLL_S)
        seen = time.perf_counter()
        failed = {i: st for i, (st, _) in done.items() if st != "stored"}
        if failed:
            raise RuntimeError(f"ingest ended otherwise than stored: {list(failed.items())[:5]}")
        return seen

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
        return {"web": self.stack.procs["web"].pid, "worker": self.stack.procs["worker"].pid}


# --- the run ----------------------------------------------------------------------------------

def figure(figures: list, name, value, unit, baseline=None, baseline_value=None, target=None,
           ratio_min=None, ratio_max=None, ratio=None, value_max=None) -> Figure:
    if ratio is None and value is not None and baseline_value:
        ratio = value / baseline_value
    met = None
    if ratio is not None and ratio_min is not None:
        met = ratio >= ratio_min
    if ratio is not None and ratio_max is not None:
        met = ratio <= ratio_max
    if value is not None and value_max is not None:
        met = value <= value_max
    f = Figure(name, value, unit, baseline, baseline_value, target, ratio, met)
    figures.append(f)
    return f


def run(sizes: Sizes, work: Path, log, tries: int) -> tuple[list[Figure], dict]:
    figures: list[Figure] = []
    notes: dict = {"samples": {}}
    samples = notes["samples"]
    log(f"writing {tries} x {human(sizes.big)} of random input")
    bigs = [work / f"big-{i}.bin" for i in range(tries)]
    shas = [random_file(p, sizes.big) for p in bigs]
    big = bigs[0]
    settle()

    def best(name: str, seconds: list[float], size: int = sizes.big) -> float:
        """The fastest of the tries (the others were slowed by whatever else ran on the machine)."""
        samples[name] = [round(rate(size, x), 1) for x in seconds]
        return rate(size, min(seconds))

    log(f"baseline: raw write of {human(sizes.big)} in 1 MiB blocks + one fsync (x{tries})")
    raw_name = f"raw write {human(sizes.big)} (1 MiB blocks, one fsync)"
    raw = figure(figures, raw_name, best(raw_name, [raw_write(work / "raw.bin", sizes.big) for _ in bigs]),
                 "MB/s")

    nginx_put = nginx_get = nginx_small = None
    if shutil.which("nginx") is None:
        notes["nginx"] = "nginx is missing (apt-get install nginx-light): no nginx baselines in this run"
        log("*** " + notes["nginx"])
    else:
        log(f"baseline: nginx WebDAV PUT and GET through curl (x{tries})")
        nginx = Nginx(work / "nginx")
        put_times, get_times = [], []
        try:
            for i, path in enumerate(bigs):
                settle()
                code, put_s, body = curl("-T", str(path), f"{nginx.base_url}/big-{i}.bin")
                if code not in (201, 204):
                    raise RuntimeError(f"nginx PUT answered {code}: {body[:300]}")
                settle()
                code, get_s, got = curl_get(f"{nginx.base_url}/big-{i}.bin")
                if code != 200 or got != sizes.big:
                    raise RuntimeError(f"nginx GET answered {code} with {got} bytes")
                put_times.append(put_s)
                get_times.append(get_s)
            salt = os.urandom(8)
            started = time.perf_counter()
            codes = many(sizes.small_n, lambda s, i: s.put(f"{nginx.base_url}/small/{i}",
                                                           data=small_body(i, sizes.small_each, salt),
                                                           timeout=60).status_code)
            small_s = time.perf_counter() - started
            if set(codes) - {201, 204}:
                raise RuntimeError(f"nginx small PUTs answered {sorted(set(codes))}")
        finally:
            nginx.stop()
            shutil.rmtree(work / "nginx", ignore_errors=True)
        name = f"nginx PUT {human(sizes.big)} (curl -T)"
        nginx_put = figure(figures, name, best(name, put_times), "MB/s")
        name = f"nginx GET {human(sizes.big)} (curl)"
        nginx_get = figure(figures, name, best(name, get_times), "MB/s")
        nginx_small = figure(figures, f"nginx PUT {sizes.small_n} x {human(sizes.small_each)} (8 clients)",
                             sizes.small_n / small_s, "files/s")
    put_base = nginx_put or raw

    log("starting the store: gunicorn, celery worker, Redis, nx-27017")
    backends = Backends(work / "backends")
    stack = None
    try:
        stack = Stack(work / "store", backends, web_workers=2, web_threads=16)
        store = Store(stack)

        log(f"store: upload {human(sizes.big)} and download it (x{tries}, distinct content)")
        ids, to_202s, to_storeds, get_times = [], [], [], []
        with PeakRss(store.roots()) as rss_big:
            for path in bigs:
                settle()
                file_id, to_202, to_stored = store.upload(path)
                code, get_s, got = curl_get(store.url(f"/api/files/{file_id}"))
                if code != 200 or got != sizes.big:
                    raise RuntimeError(f"download answered {code} with {got} bytes")
                ids.append(file_id)
                to_202s.append(to_202)
                to_storeds.append(to_stored)
                get_times.append(get_s)
        for file_id, sha in zip(ids, shas):
            store.verify_download(file_id, sha, sizes.big)
        file_id = ids[0]
        first_worker_s = store.worker_seconds(file_id)
        name = f"upload {human(sizes.big)}: to the 202"
        figure(figures, name, best(name, to_202s), "MB/s", put_base.name, put_base.value)
        name = f"upload {human(sizes.big)}: to stored"
        single = figure(figures, name, best(name, to_storeds), "MB/s", put_base.name, put_base.value,
                        ">= 0.9x nginx PUT", ratio_min=0.9)
        get_base = nginx_get or raw
        name = f"download {human(sizes.big)}, verified"
        figure(figures, name, best(name, get_times), "MB/s", get_base.name, get_base.value,
               ">= 0.7x nginx GET", ratio_min=0.7)
        figure(figures, f"first ingest of {human(sizes.big)}: worker time", first_worker_s, "s")
        for path in bigs[1:]:
            path.unlink()

        log("store: upload the same content again")
        before = store.node_bytes()
        settle()
        again_id, _, _ = store.upload(big)
        added = store.node_bytes() - before
        again_worker_s = store.worker_seconds(again_id)
        figure(figures, "re-upload: bytes added under nodes/", added, "bytes", target="0", value_max=0)
        figure(figures, "re-upload: worker time", again_worker_s, "s", "first ingest: worker time",
               first_worker_s, "<= 0.1x first ingest", ratio_max=0.1)

        n, each = sizes.parallel_n, sizes.parallel_each
        log(f"store: {n} parallel uploads of {human(each)}")
        paths = [work / f"par-{i}.bin" for i in range(n)]
        for p in paths:
            random_file(p, each)
        settle()
        with ThreadPoolExecutor(n) as pool:
            uploads = list(pool.map(store.upload, paths))
        par_s = max(u[2] for u in uploads)  # all start together: the last one stored ends the run
        for p in paths:
            p.unlink()
        figure(figures, f"{n} parallel uploads of {human(each)}: aggregate to stored", rate(n * each, par_s),
               "MB/s", single.name, single.value, ">= single upload", ratio_min=1.0)

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

        started = time.perf_counter()
        small_ids = many(sizes.small_n, send_small)
        small_s = store.wait_stored(small_ids) - started
        if store.stored_count() != stored_before + sizes.small_n:
            raise RuntimeError("the status API does not count every small file as stored")
        small_base = nginx_small
        figure(figures, f"{sizes.small_n} uploads of {human(sizes.small_each)} (8 clients): to stored",
               sizes.small_n / small_s, "files/s", small_base.name if small_base else None,
               small_base.value if small_base else None, ">= 200 files/s")
        figures[-1].met = figures[-1].value >= 200

        big.unlink()
        huge = work / "huge.bin"
        log(f"store: upload {human(sizes.huge)} (peak RSS)")
        random_file(huge, sizes.huge)
        settle()
        with PeakRss(store.roots()) as rss_huge:
            store.upload(huge)
        huge.unlink()
        for name in ("web", "worker"):
            small_peak, large_peak = rss_big.mib()[name], rss_huge.mib()[name]
            figure(figures, f"peak RSS {name}, {human(sizes.big)} up+down", small_peak, "MiB",
                   target="<= 150 MiB", value_max=150)
            figure(figures, f"peak RSS {name}, {human(sizes.huge)} upload", large_peak, "MiB",
                   f"peak RSS {name}, {human(sizes.big)}", small_peak, "<= 150 MiB, flat with size",
                   value_max=150)
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

    rows = [("figure", "value", "unit", "baseline", "ratio", "target", "met")]
    for f in figures:
        base = "-" if f.baseline_value is None else f"{num(f.baseline_value)} ({f.baseline})"
        ratio = "-" if f.ratio is None else f"{f.ratio:.2f}x"
        met = "-" if f.met is None else ("yes" if f.met else "NO")
        rows.append((f.name, num(f.value), f.unit, base, ratio, f.target or "-", met))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> dict:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "memory_gib": round(psutil.virtual_memory().total / GiB, 1), "load_avg": os.getloadavg()}


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
    for note in ("nginx",):
        if note in notes:
            print(f"\nnote: {notes[note]}")
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
