"""The supervisor behind ``minis3 run``: start every process of one machine, restart one that
dies, stop them all on Ctrl-C or SIGTERM.

A child is a name and a function that builds its command line (called again for each restart,
so an embedded Redis or nx-27017 comes back on the same port and data directory). A child that
exits is restarted after a back-off that doubles from ``BACKOFF_FIRST_S`` to ``BACKOFF_MAX_S``
(reset once it has stayed up for ``CRASH_WINDOW_S``); one that exits ``CRASH_LIMIT`` times within
``CRASH_WINDOW_S`` is broken, not unlucky: everything stops and the runner exits 1.
"""
from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO

from config import embedded

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0
CRASH_LIMIT = 5
CRASH_WINDOW_S = 60.0
POLL_S = 0.1
STOP_TIMEOUT_S = 20.0


@dataclass
class Child:
    name: str
    command: Callable[[], list[str]]
    # waits until a freshly started child serves (raises if it cannot): the next child starts after
    ready: Callable[[subprocess.Popen], None] | None = None
    service: bool = False  # a backing service (Redis, MongoDB): stopped after every other child
    quiet: bool = False  # its output goes nowhere (services keep their own log files)
    proc: subprocess.Popen | None = field(default=None, repr=False)
    started: float = 0.0
    exits: collections.deque = field(default_factory=collections.deque, repr=False)
    backoff_s: float = 0.0
    restart_at: float | None = None


class CrashLoop(Exception):
    """A child keeps dying."""


class Supervisor:
    def __init__(self, children: list[Child], env: dict[str, str] | None = None, out: TextIO | None = None,
                 backoff_first_s: float = BACKOFF_FIRST_S, backoff_max_s: float = BACKOFF_MAX_S,
                 crash_limit: int = CRASH_LIMIT, crash_window_s: float = CRASH_WINDOW_S,
                 stop_timeout_s: float = STOP_TIMEOUT_S):
        self.children = children
        self.env = env
        self.out = out or sys.stderr
        self.backoff_first_s = backoff_first_s
        self.backoff_max_s = backoff_max_s
        self.crash_limit = crash_limit
        self.crash_window_s = crash_window_s
        self.stop_timeout_s = stop_timeout_s
        self._stopping = threading.Event()

    def say(self, message: str) -> None:
        print(f"minis3: {message}", file=self.out, flush=True)

    def request_stop(self, *_signal_args) -> None:
        """Ask ``run`` to return (safe from a signal handler)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _spawn(self, child: Child) -> None:
        child.proc = embedded.spawn(child.command(), env=self.env, quiet=child.quiet)
        child.started = time.monotonic()
        child.restart_at = None

    def start(self) -> None:
        """Start every child in order, each ready before the next; raises if one cannot start."""
        for child in self.children:
            if self.stopping:
                return
            self._spawn(child)
            if child.ready is not None:
                child.ready(child.proc)

    def run(self) -> int:
        """Watch the children until a stop is requested (0) or one keeps dying (1)."""
        try:
            while not self.stopping:
                self.check_children()
                self._stopping.wait(POLL_S)
        except CrashLoop as exc:
            self.say(f"{exc}; stopping everything")
            return 1
        return 0

    def check_children(self, now: float | None = None) -> None:
        """Note children that exited and restart those whose back-off is over."""
        now = time.monotonic() if now is None else now
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at and not self.stopping:
                    self._spawn(child)
                continue
            if child.proc is None or child.proc.poll() is None:
                continue
            code = child.proc.returncode
            _kill_group(child.proc)  # what the leader leaves behind (gunicorn workers, a celery pool)
            if now - child.started >= self.crash_window_s:
                child.backoff_s = 0.0  # it had been up a good while: this is a new incident
            child.exits.append(now)
            while child.exits and now - child.exits[0] > self.crash_window_s:
                child.exits.popleft()
            if len(child.exits) >= self.crash_limit:
                raise CrashLoop(f"{child.name} exited {len(child.exits)} times within "
                                f"{self.crash_window_s:g}s (last with {code})")
            child.backoff_s = min(self.backoff_max_s, child.backoff_s * 2 or self.backoff_first_s)
            child.restart_at = now + child.backoff_s
            self.say(f"{child.name} exited with {code}; restarting in {child.backoff_s:g}s")

    def stop(self) -> None:
        """SIGTERM the children (services last), SIGKILL what is left after the stop timeout."""
        self._stopping.set()
        others = [c for c in self.children if not c.service]
        services = [c for c in self.children if c.service]
        for tier in (others, services):
            running = [c.proc for c in reversed(tier) if c.proc is not None and c.proc.poll() is None]
            for proc in running:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            for proc in running:
                embedded.stop(proc, timeout=self.stop_timeout_s)
            for c in tier:  # a leader that died just before the stop may have left its group
                if c.proc is not None:
                    _kill_group(c.proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
