"""Long operator jobs report progress: fsck and GC call back with the count of items done, and
``minis3 fsck``/``gc`` draw a bar on a terminal only, never with ``--json``."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import termios
import time

from tests.stack import BIN, ROOT, random_bytes

CHUNK = 64 * 1024


def put(store, data: bytes, name: str) -> str:
    f = store.receive("t1", name, "application/octet-stream", iter([data]))
    assert store.ingest(f.id).status == "stored"
    return f.id


def test_fsck_reports_each_chunk_file_file_and_chunk_document_it_looks_at(store):
    put(store, random_bytes(3 * CHUNK + 5, 901), "a.bin")  # 4 chunks
    put(store, random_bytes(2 * CHUNK, 902), "b.bin")  # 2 chunks
    calls: list[tuple[int, int | None]] = []
    report = store.fsck().run(progress=lambda done, total: calls.append((done, total)))
    k, m = store.settings.ec_layout
    fragment_files = 6 * (k + m)
    assert report.clean and report.chunk_files_checked == fragment_files and report.files_checked == 2
    counts = [done for done, _ in calls]
    assert counts == sorted(counts) and {total for _, total in calls} == {None}
    assert counts[-1] == fragment_files + 2 + 6  # fragment files on the nodes, stored files, chunk documents


def test_gc_reports_the_candidate_chunks_it_looks_at(store):
    file_id = put(store, random_bytes(5 * CHUNK, 903), "c.bin")
    store.delete("t1", file_id)
    calls: list[tuple[int, int | None]] = []
    report = store.garbage_collector().collect(now=time.time() + store.settings.gc_grace_s + 1,
                             progress=lambda done, total: calls.append((done, total)))
    assert report["chunks"] == 5
    assert calls and calls[-1] == (5, None)


def run_with_terminal_stderr(args: list[str], env: dict) -> tuple[subprocess.CompletedProcess, bytes]:
    """Run ``minis3 ARGS`` with stderr on a pseudo-terminal; return the result and what it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen([str(BIN / "minis3"), *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=slave)
    os.close(slave)
    drawn = b""
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            piece = os.read(master, 65536)
        except OSError:  # the terminal's other end closed
            break
        if not piece:
            break
        drawn += piece
    stdout = proc.stdout.read()
    proc.wait(60)
    os.close(master)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout.decode()), drawn


def test_minis3_fsck_and_gc_draw_a_bar_on_a_terminal_and_stay_quiet_otherwise(settings, store):
    put(store, random_bytes(3 * CHUNK, 904), "d.bin")
    env = {**os.environ, **settings.to_env()}

    done, drawn = run_with_terminal_stderr(["fsck"], env)
    assert done.returncode == 0 and "clean" in done.stdout
    assert b"fsck" in drawn and b"items" in drawn  # the bar, drawn on the terminal

    done, drawn = run_with_terminal_stderr(["gc", "--dry-run"], env)
    assert done.returncode == 0 and b"gc" in drawn and b"chunks" in drawn

    for args in (["fsck", "--json"], ["gc", "--dry-run", "--json"]):
        done, drawn = run_with_terminal_stderr(args, env)
        assert done.returncode == 0 and drawn == b""  # --json: no bar even on a terminal
        assert isinstance(json.loads(done.stdout), dict)

    piped = subprocess.run([str(BIN / "minis3"), "fsck"], env=env, cwd=ROOT, capture_output=True, text=True,
                           timeout=60)
    assert piped.returncode == 0 and piped.stderr == ""  # stderr not a terminal: no bar
