"""Progress of long operator jobs (fsck, GC), reported to an optional callback.

The callback receives the count of items done so far and the total when it is known (else
None); the front end decides how to show it (``minis3`` draws a bar on a terminal).
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Callable

ProgressCallback = Callable[[int, "int | None"], None]


class TimedReport:
    """The report of a job (a dataclass with ``seconds``), as JSON, its time rounded to the millisecond."""

    def to_json(self) -> dict:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


class Progress:
    def __init__(self, callback: ProgressCallback | None = None, total: int | None = None):
        self.callback = callback
        self.total = total
        self.done = 0

    def advance(self, items: int = 1) -> None:
        self.done += items
        if self.callback is not None:
            self.callback(self.done, self.total)
