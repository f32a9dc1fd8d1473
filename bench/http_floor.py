#!/usr/bin/env python3
"""The floor under this store's small S3 PUTs: what gunicorn (and Flask on it) cost per request with
no store behind them, on the same load as the benchmark's small-object row.

Starts gunicorn exactly as the S3 front end runs (gthread, ``MINIS3_WEB_WORKERS`` x
``MINIS3_WEB_THREADS``: 2 x 16 by default) serving an application that reads the body and answers
200 with its MD5 as the ETag: first a bare WSGI function, then the same in a Flask app. Each is sent
``--small`` 4 KiB objects by ``s5cmd --numworkers 64 cp`` (bench/compare.py's small row) and the
row gives the server's CPU (user + system, every gunicorn process) per request.

    .venv/bin/python bench/http_floor.py               # 1,000 objects per row
    .venv/bin/python bench/http_floor.py --small 2000
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.embedded import free_port, wait_for_port  # noqa: E402
from config.settings import Settings  # noqa: E402


def wsgi_app(environ, start_response):
    """Reads the body, answers 200 with its MD5: the least an S3 PUT can be."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    start_response("200 OK", [("ETag", f'"{hashlib.md5(body).hexdigest()}"'), ("Content-Length", "0")])
    return [b""]


def flask_app():
    from flask import Flask, Response, request

    app = Flask(__name__)

    @app.route("/<path:_key>", methods=["PUT"])
    def put(_key):
        body = request.get_data()
        return Response(b"", headers={"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    return app


def s5cmd() -> str:
    return str(Path(sys.executable).with_name("s5cmd"))


def row(name: str, target: str, small_dir: Path, n: int) -> str:
    from procgroups import CpuTimes  # bench/ (not importable by the gunicorn that loads this module)

    settings = Settings.from_env()
    port = free_port()
    cmd = [str(Path(sys.executable).with_name("gunicorn")), "--worker-class", "gthread",
           "--workers", str(settings.web_workers), "--threads", str(settings.web_threads),
           "--keep-alive", "5", "--bind", f"127.0.0.1:{port}", "--log-level", "warning", target]
    server = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for_port(port, proc=server)
        time.sleep(1.0)  # the workers import the app after the arbiter listens
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "floor", "AWS_SECRET_ACCESS_KEY": "floor", "AWS_REGION": "us-east-1"}
        started = time.monotonic()
        with CpuTimes({"server": server.pid}) as cpu:
            subprocess.run([s5cmd(), "--endpoint-url", f"http://127.0.0.1:{port}", "--numworkers", "64",
                            "cp", f"{small_dir}/*", "s3://floor/small/"], env=env, check=True,
                           stdout=subprocess.DEVNULL)
        seconds, used = time.monotonic() - started, cpu.seconds["server"]
    finally:
        server.terminate()
        server.wait(10)
    return f"| {name} | {n / seconds:,.0f} | {used / n * 1000:.2f} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1000, help="4 KiB objects per row (default: 1,000)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        small_dir = Path(tmp)
        for i in range(args.small):
            (small_dir / f"{i:05d}.bin").write_bytes(os.urandom(4096))
        print("| server (gunicorn gthread as the S3 front end) | 4 KiB PUT/s | server CPU ms/request |")
        print("|---|---|---|")
        print(row("bare WSGI function", "bench.http_floor:wsgi_app", small_dir, args.small), flush=True)
        print(row("Flask route", "bench.http_floor:flask_app()", small_dir, args.small), flush=True)


if __name__ == "__main__":
    main()
