"""`minis3 run` (what `make run` starts): everything up in one go, and nothing left after SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

from config import embedded
from tests.stack import ROOT, random_bytes


def test_run_starts_everything_and_sigterm_leaves_no_process_behind(tmp_path):
    port, flower, s3_port = embedded.free_port(), embedded.free_port(), embedded.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIS3_")}
    env.update(MINIS3_PORT=str(port), MINIS3_FLOWER_PORT=str(flower), MINIS3_S3_PORT=str(s3_port), MINIS3_VAR_DIR=str(tmp_path / "var"),
               MINIS3_SPOOL_DIR=str(tmp_path / "spool"), MINIS3_RATE_LIMIT="",
               MINIS3_NODES=",".join(str(tmp_path / f"nodes/node-{i}") for i in (1, 2, 3)))
    out = open(tmp_path / "run.log", "wb")
    runner = subprocess.Popen([str(Path(sys.executable).with_name("minis3")), "run"], cwd=ROOT, env=env,
                              stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while b"listening on" not in (tmp_path / "run.log").read_bytes():
            assert runner.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            time.sleep(0.2)
        data = random_bytes(2 * (1 << 20) + 3, 77)
        r = requests.post(f"http://127.0.0.1:{port}/api/upload?wait=1", files={"file": ("x.bin", data)},
                          timeout=120)
        assert r.status_code == 201, r.text
        assert requests.get(f"http://127.0.0.1:{port}/api/files/{r.json()['fileId']}", timeout=60).content == data
        unsigned = requests.get(f"http://127.0.0.1:{s3_port}/", timeout=30)  # the S3 front end answers, in XML
        assert unsigned.status_code == 403 and "<Code>AccessDenied</Code>" in unsigned.text
        assert (tmp_path / "var/secret.key").stat().st_mode & 0o777 == 0o600
        embedded.wait_for_port(flower, timeout=60)
        assert requests.get(f"http://127.0.0.1:{flower}/", timeout=30).status_code == 200
        family = psutil.Process(runner.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in family)
        for expected in ("redis-server", "nx-27017", "gunicorn", "worker", "beat", "flower"):
            assert expected in names, names
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(60) == 0
        gone, alive = psutil.wait_procs(family, timeout=10)
        assert alive == [], [p.cmdline() for p in alive]
    finally:
        if runner.poll() is None:
            runner.kill()
