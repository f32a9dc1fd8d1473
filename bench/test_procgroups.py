"""The benchmark's process-group meters against processes whose CPU and memory use are known.

    PYTHONPATH=$PWD .venv/bin/python -m pytest -q bench/test_procgroups.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from procgroups import CpuTimes, PeakRss, group_members

# A root that burns 0.4 s of CPU before it is measured; then, once told "go", a child of its own
# that burns 0.5 s and exits (reaped: its time is in the root's children_*), then 0.3 s itself.
BURNER = textwrap.dedent("""
    import subprocess, sys, time

    def burn(seconds):
        end = time.process_time() + seconds
        while time.process_time() < end:
            pass

    burn(0.4)
    print("ready", flush=True)
    sys.stdin.readline()
    subprocess.run([sys.executable, "-c", "import time\\nend = time.process_time() + 0.5\\n"
                    "while time.process_time() < end: pass"], check=True)
    burn(0.3)
    print("done", flush=True)
    sys.stdin.readline()
""")

# A root whose RSS peaked at 300 MiB before it is measured and at about 60 MiB while measured.
GROWER = textwrap.dedent("""
    import sys
    big = bytearray(300 << 20)
    for i in range(0, len(big), 4096): big[i] = 1
    del big
    print("ready", flush=True)
    sys.stdin.readline()
    small = bytearray(60 << 20)
    for i in range(0, len(small), 4096): small[i] = 1
    del small
    print("done", flush=True)
    sys.stdin.readline()
""")


def start(script: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def finish(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(30)


def test_cpu_of_a_group_counts_reaped_children_and_nothing_before_the_block():
    proc = start(BURNER)
    try:
        with CpuTimes({"burner": proc.pid, "client": os.getpid()}) as cpu:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "done"
    finally:
        finish(proc)
    assert 0.75 <= cpu.seconds["burner"] <= 0.95, cpu.seconds  # 0.5 reaped + 0.3 own, not the 0.4 before
    assert cpu.seconds["client"] < 0.3, cpu.seconds  # the burner is our child, yet not the client's


def test_groups_stop_at_another_groups_root():
    proc = start(BURNER)
    try:
        groups = group_members({"client": os.getpid(), "burner": proc.pid, "gone": 2 ** 22 + 1})
    finally:
        finish(proc)
    assert groups["burner"] == [proc.pid]
    assert groups["client"][0] == os.getpid() and proc.pid not in groups["client"]
    assert groups["gone"] == []


def test_peak_rss_is_the_peak_during_the_block_not_before():
    proc = start(GROWER)
    try:
        with PeakRss({"grower": proc.pid}) as rss:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "done"
    finally:
        finish(proc)
    assert not rss.not_reset
    assert 60 <= rss.mib()["grower"] <= 150, rss.mib()
