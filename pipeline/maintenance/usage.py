"""The store's figures over time, and how much each tenant's own files deduplicate.

Beat takes a sample every ``MINIS3_SAMPLE_INTERVAL_S``: ingest queue depth, the files and bytes
that became stored since the previous sample (throughput), logical and physical bytes and bytes
per node; samples are kept for two hours (``pipeline.metadata.operations.SAMPLES_KEPT_S``). The same run computes
each tenant's usage: logical bytes (its stored files) and physical bytes (the distinct chunks
of its own files, each once), so that a tenant sees what deduplication saves it without
learning anything of other tenants' content. Walking manifests is bounded: past
``USAGE_DISTINCT_MAX`` distinct chunks a tenant's physical bytes are left unknown.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from config.settings import Settings
from pipeline.maintenance.stats import Stats
from pipeline.metadata.files import FileRepository
from pipeline.metadata.operations import OperationsRepository
from pipeline.timefmt import iso8601

USAGE_DISTINCT_MAX = 1_000_000  # distinct chunks remembered per tenant (~150 MB of hashes)
WINDOW_MAX_S = 3600.0  # a first sample, or one after a long pause, counts at most the last hour


@dataclass
class Usage:
    """Samples of the store's figures over time, and each tenant's usage."""

    files: FileRepository
    operations: OperationsRepository
    stats: Stats
    settings: Settings

    def take_sample(self, queue_depth: Callable[[], int], now: float | None = None) -> dict:
        now = time.time() if now is None else now
        prev = self.operations.last_sample()
        since = max(prev["at"] if prev else now - self.settings.sample_interval_s, now - WINDOW_MAX_S)
        files, stored_bytes = self.files.stored_since(since, now)
        figures = self.stats.of_store(queue_depth)
        sample = {
            "at": now, "seconds": round(now - since, 3), "queueDepth": figures["queueDepth"],
            "storedFiles": files, "storedBytes": stored_bytes,
            "logicalBytes": figures["logicalBytes"], "physicalBytes": figures["physicalBytes"],
            "uniqueBytes": figures["uniqueBytes"],
            "nodes": {n["node"]: n["bytes"] for n in figures["nodes"]},
        }
        self.operations.add_sample(sample)
        return sample

    def tenant_usage(self, tenant: str, distinct_max: int = USAGE_DISTINCT_MAX,
                     now: float | None = None) -> dict:
        sizes: dict[str, int] = {}
        files = logical = entries = 0
        complete = True
        for f in self.files.stored_files_of(tenant):
            files += 1
            logical += f.size
            if not complete:
                continue
            for page in self.files.iter_manifest(f.id):
                for _, _, h, _, n in page.sized(f.chunk_size, f.size).entries():
                    sizes.setdefault(h, n)
                    entries += 1
                if len(sizes) > distinct_max:
                    complete = False
                    break
        physical = sum(sizes.values()) if complete else None
        return {
            "at": time.time() if now is None else now, "files": files, "logicalBytes": logical,
            "physicalBytes": physical, "chunks": entries if complete else None,
            "distinctChunks": len(sizes) if complete else None,
            "dedupRatio": round(logical / physical, 4) if physical else None,
        }

    def refresh_usage(self, now: float | None = None) -> list[str]:
        """Recompute every tenant's usage; returns the tenants."""
        tenants = self.files.tenants()
        for tenant in tenants:
            self.operations.put_usage(tenant, self.tenant_usage(tenant, now=now))
        self.operations.drop_usage_except(tenants)
        return tenants

    def history(self, window_s: float, events_per_kind: int = 50, now: float | None = None) -> dict:
        """Samples of the last ``window_s`` and the latest runs of each periodic job (GC, and scrub or
        heal where the store records them)."""
        now = time.time() if now is None else now
        samples = self.operations.samples_since(now - window_s)
        for s in samples:
            s["throughputBytesPerS"] = round(s["storedBytes"] / s["seconds"], 1) if s.get("seconds") else 0.0
            s["at"] = iso8601(s["at"])
        events = {}
        for kind in self.operations.history_kinds():
            events[kind] = [{**e, "at": iso8601(e["at"])}
                            for e in self.operations.event_history(kind, events_per_kind)]
        return {"windowSeconds": window_s, "sampleIntervalSeconds": self.settings.sample_interval_s,
                "samples": samples, "events": events}
