"""CPU time and peak RSS of process groups, from /proc.

A group is a root process and its descendants (gunicorn's master and workers, celery's main
process and its pool, nginx's master and workers...), minus the subtree of any other group's root
that lies below it: the benchmark's own process is the root of the "client" group although it
started every server as its child.
"""
from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import psutil

MiB = 1 << 20


def group_members(roots: Mapping[str, int]) -> dict[str, list[int]]:
    """pids of each group right now (the root first); a group whose root is gone is empty."""
    children: dict[int, list[int]] = defaultdict(list)
    alive = set()
    for p in psutil.process_iter(["ppid"]):
        alive.add(p.pid)
        children[p.info["ppid"]].append(p.pid)
    other_roots = set(roots.values())
    groups = {}
    for name, root in roots.items():
        members, todo = [], [root] if root in alive else []
        while todo:
            pid = todo.pop()
            members.append(pid)
            todo.extend(c for c in children.get(pid, ()) if c not in other_roots)
        groups[name] = members
    return groups


class CpuTimes:
    """CPU seconds (user + system, as /proc counts them) each group used during a ``with`` block.

    Each process counts its own time plus ``children_user``/``children_system``: the time of its
    children that exited and were reaped meanwhile (a recycled worker, a finished curl), so what a
    group spent is not lost when a process ends. ``seconds`` holds the result after the block.
    """

    def __init__(self, roots: Mapping[str, int]):
        self.roots = dict(roots)
        self.start: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def read(self) -> dict[str, float]:
        """Cumulative CPU seconds of each group now, read over a process tree that held still."""
        for _ in range(5):
            groups = group_members(self.roots)
            try:
                totals = {name: sum(_cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}
            except psutil.NoSuchProcess:  # one just ended: its time moves to its parent's children_*
                continue
            if group_members(self.roots) == groups:
                return totals
        return {name: sum(_cpu_seconds(pid, missing=0.0) for pid in pids)  # a tree in constant churn
                for name, pids in group_members(self.roots).items()}

    def __enter__(self) -> "CpuTimes":
        self.start = self.read()
        return self

    def __exit__(self, *exc) -> None:
        end = self.read()
        self.seconds = {name: max(0.0, end[name] - self.start.get(name, 0.0)) for name in self.roots}


def _cpu_seconds(pid: int, missing: float | None = None) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        if missing is None:
            raise
        return missing
    return t.user + t.system + t.children_user + t.children_system


HWM = re.compile(rb"^VmHWM:\s+(\d+) kB", re.M)


def _high_water_mark(pid: int) -> int | None:
    try:
        m = HWM.search(Path(f"/proc/{pid}/status").read_bytes())
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


class PeakRss(threading.Thread):
    """Largest RSS of any one process of each group during a ``with`` block.

    Read from the kernel's own high-water mark (``VmHWM``), reset at the start through
    ``/proc/<pid>/clear_refs``: exact, and nearly free, where sampling RSS every few ms would miss
    short peaks and, walking the process table, take a good part of a core from what it measures.
    The marks are read every ``every`` seconds too, for a process that ends before the block does.
    """

    def __init__(self, roots: Mapping[str, int], every: float = 0.5):
        super().__init__(daemon=True)
        self.roots = dict(roots)
        self.every = every
        self.peak: dict[str, int] = {name: 0 for name in roots}
        self.not_reset: list[int] = []
        self.stop_event = threading.Event()

    def reset(self) -> None:
        for pids in group_members(self.roots).values():
            for pid in pids:
                try:
                    with open(f"/proc/{pid}/clear_refs", "w") as f:
                        f.write("5")
                except OSError:
                    self.not_reset.append(pid)

    def sample(self) -> None:
        for name, pids in group_members(self.roots).items():
            for pid in pids:
                mark = _high_water_mark(pid)
                if mark is not None:
                    self.peak[name] = max(self.peak[name], mark)

    def run(self) -> None:
        while not self.stop_event.wait(self.every):
            self.sample()

    def mib(self) -> dict[str, float]:
        return {name: peak / MiB for name, peak in self.peak.items()}

    def __enter__(self) -> "PeakRss":
        self.reset()
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.join()
        self.sample()
