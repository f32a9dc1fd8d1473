"""Scrub: read every fragment of every stored chunk at a bounded rate, verify it against its
checksum, quarantine what is corrupt and queue a heal of every chunk found damaged.

A pass walks the chunks in hash order; its cursor (the last chunk done) is kept in MongoDB after
every page, so a scrub stopped by a restart resumes where it stopped. Beat runs a slice of the
pass every few seconds (``run_slice``), and a new pass starts once ``MINIS3_SCRUB_PERIOD_S`` has
passed since the last one started, so that every fragment is read at least once per period as long
as ``MINIS3_SCRUB_MBPS`` can read the store in that time (``behind`` says when it cannot).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from config.settings import Settings
from pipeline.metadata.chunks import ChunkRepository
from pipeline.metadata.operations import OperationsRepository
from pipeline.storage.chunkio import ChunkIO, fragments

log = logging.getLogger(__name__)

EVENT = "scrub"
LOCK = "minis3:scrub:lock"
PAGE = 200
SAMPLE = 100


@dataclass
class ScrubReport:
    pass_started: float | None = None
    finished: bool = False
    chunks: int = 0
    fragments: int = 0
    bytes: int = 0
    corrupt: int = 0
    missing: int = 0
    damaged: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    idle: bool = False  # no pass was due

    @property
    def mbps(self) -> float:
        return round(self.bytes / self.seconds / 1e6, 3) if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "seconds": round(self.seconds, 3), "mbps": self.mbps}


class _Throttle:
    """Keep the bytes read per second at or under ``mbps`` (decimal megabytes); 0 is no limit."""

    def __init__(self, mbps: float):
        self.rate = mbps * 1e6
        self.started = time.monotonic()
        self.done = 0

    def add(self, n: int) -> None:
        self.done += n
        if self.rate > 0:
            ahead = self.done / self.rate - (time.monotonic() - self.started)
            if ahead > 0:
                time.sleep(ahead)


@dataclass
class Scrubber:
    """The background scrub: passes over every stored chunk, a slice at a time."""

    chunks: ChunkRepository
    operations: OperationsRepository
    chunkio: ChunkIO
    report_damage: Callable[[str], None]  # flags a damaged chunk and queues its heal
    settings: Settings

    def scrub_chunk(self, doc: dict, report: ScrubReport, on_damage: Callable[[str], None]) -> int:
        """Read and verify every fragment of one chunk; returns the bytes read."""
        lay = self.chunkio.layout_of(doc)
        found = lay.verify(doc)
        report.chunks += 1
        report.fragments += len(found.good) + len(found.corrupt)
        report.bytes += found.bytes_read
        absent = len(found.missing) + max(0, lay.width - len(fragments(doc)))
        if not found.corrupt and not absent:
            return found.bytes_read
        self.chunkio.quarantine_corrupt(doc, found, "scrub")
        report.corrupt += len(found.corrupt)
        report.missing += absent
        if len(report.damaged) < SAMPLE:
            report.damaged.append({"chunk": doc["_id"], "corrupt": [f["i"] for f, _ in found.corrupt],
                                   "missing": [f["i"] for f in found.missing]})
        if lay.redundant:  # heal can rebuild it
            on_damage(doc["_id"])
        return found.bytes_read

    def run_slice(self, budget_s: float | None = None, mbps: float | None = None, full: bool = False,
                  on_damage: Callable[[str], None] | None = None, progress: Callable[[int], None] | None = None,
                  now: float | None = None, page_size: int = PAGE) -> ScrubReport:
        """Scrub for at most ``budget_s`` seconds (None: to the end of the pass), continuing the pass in
        progress or starting one when due (``full``: start one now if none is in progress)."""
        started = time.monotonic()
        now = time.time() if now is None else now
        on_damage = on_damage or self.report_damage
        state = self.operations.last_event(EVENT) or {}
        cursor = state.get("cursor")
        report = ScrubReport(pass_started=state.get("passStarted"))
        if not state.get("inPass"):
            last = state.get("passStarted")
            if not full and last is not None and now - last < self.settings.scrub_period_s:
                report.idle = True
                return report
            cursor, report.pass_started = None, now
            self.operations.update_event(EVENT, {"inPass": True, "cursor": None, "passStarted": now, "pass": {}})
        throttle = _Throttle(self.settings.scrub_mbps if mbps is None else mbps)
        while True:
            page = self.chunks.stored_chunks(cursor, page_size)
            if not page:
                report.finished = True
                break
            before = (report.chunks, report.fragments, report.bytes, report.corrupt, report.missing)
            for doc in page:
                throttle.add(self.scrub_chunk(doc, report, on_damage))
                cursor = doc["_id"]
                if progress is not None:
                    progress(1)
            after = (report.chunks, report.fragments, report.bytes, report.corrupt, report.missing)
            inc = {f"pass.{name}": a - b for name, a, b in
                   zip(("chunks", "fragments", "bytes", "corrupt", "missing"), after, before)}
            self.operations.update_event(EVENT, {"cursor": cursor}, inc=inc)
            if len(page) < page_size:
                report.finished = True
                break
            if budget_s is not None and time.monotonic() - started >= budget_s:
                break
        report.seconds = time.monotonic() - started
        if report.finished:
            state = self.operations.last_event(EVENT) or {}
            totals = state.get("pass") or {}
            elapsed = time.time() - (report.pass_started or now)
            self.operations.update_event(EVENT, {
                "inPass": False, "cursor": None,
                "lastPass": {"started": report.pass_started, "finished": time.time(), "seconds": round(elapsed, 3),
                             **{k: totals.get(k, 0) for k in ("chunks", "fragments", "bytes", "corrupt", "missing")}},
            })
            log.info("scrub pass done: %s", totals)
        return report

    def status(self) -> dict | None:
        """What stats and health show: the pass in progress and the last finished one."""
        state = self.operations.last_event(EVENT)
        if state is None:
            return None
        last = state.get("lastPass")
        period = self.settings.scrub_period_s
        out = {"inPass": bool(state.get("inPass")), "passStarted": state.get("passStarted"),
               "current": state.get("pass") or {}, "lastPass": last, "periodSeconds": period,
               "rateLimitMBps": self.settings.scrub_mbps}
        if last and last.get("seconds"):
            out["lastPass"] = {**last, "mbps": round(last.get("bytes", 0) / last["seconds"] / 1e6, 3)}
        started = state.get("passStarted")
        out["behind"] = bool(state.get("inPass") and started and time.time() - started > period)
        return out
