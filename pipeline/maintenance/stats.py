"""Figures: the whole store's for operators, one tenant's for everyone else.

Logical bytes are what users stored (the sizes of stored files); unique bytes are the distinct
stored chunks (their difference is what deduplication saves); physical bytes are what the nodes
hold: every fragment, so 1.5x the unique bytes in 2+1. ``chunks`` counts distinct chunks,
``fragments`` (and each node's ``chunks``) the files on nodes.

Every figure about chunks depends on all tenants' content: with global deduplication, a tenant
that saw them move after an upload would learn whether someone else already stores that content.
A tenant's view therefore holds only figures of its own files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from config.settings import Settings
from pipeline.backends import translated
from pipeline.maintenance.scrub import Scrubber
from pipeline.metadata.chunks import ChunkRepository
from pipeline.metadata.model import DELETED, FAILED, PROCESSING, QUEUED, STORED
from pipeline.metadata.operations import OperationsRepository
from pipeline.storage.chunkstore import ChunkStore
from pipeline.timefmt import iso8601

FILE_STATES = (QUEUED, PROCESSING, STORED, FAILED, DELETED)


def _files(figures: dict) -> dict:
    by_status = {state: figures["filesByStatus"].get(state, 0) for state in FILE_STATES}
    return {"total": sum(by_status.values()), "byStatus": by_status}


def usage_figures(doc: dict) -> dict:
    """A tenant's usage as the sampler last computed it (pipeline.maintenance.usage): of its own files only."""
    return {"tenant": doc["tenant"], "at": iso8601(doc.get("at")), "files": doc.get("files", 0),
            "logicalBytes": doc.get("logicalBytes", 0), "physicalBytes": doc.get("physicalBytes"),
            "dedupRatio": doc.get("dedupRatio"), "chunks": doc.get("chunks"),
            "distinctChunks": doc.get("distinctChunks")}


@dataclass
class Stats:
    """The store's figures, and one tenant's."""

    chunks: ChunkRepository
    operations: OperationsRepository
    nodes: ChunkStore
    scrubber: Scrubber  # the scrub's progress, shown with the figures
    settings: Settings

    @translated
    def of_tenant(self, tenant: str) -> dict:
        """One tenant's files by status and logical bytes, and its usage (the deduplication among its
        own files): nothing that other tenants' content moves."""
        figures = self.operations.stats(tenant)
        own = self.operations.get_usage(tenant)
        return {"scope": "tenant", "tenant": tenant, "files": _files(figures),
                "logicalBytes": figures["logicalBytes"], "usage": usage_figures(own[0]) if own else None}

    def _space(self, node: str) -> dict:
        """Free and total bytes of a configured node's filesystem (none for a node only metadata names)."""
        if node not in self.nodes.node_ids:
            return {}
        status = self.nodes.node_status(node)
        return {k: status[k] for k in ("freeBytes", "totalBytes") if k in status}

    @translated
    def of_store(self, queue_depth: Callable[[], int]) -> dict:
        """The whole store's figures; ``queue_depth`` counts the ingests waiting (the task queue's
        owner supplies it: workers.queue.ingest_queue_depth)."""
        figures = self.operations.stats()
        recorded = figures["perNode"]
        # configured nodes first (an empty one shows zeros), then any node only the metadata knows
        names = list(self.nodes.node_ids) + sorted(n for n in recorded if n not in self.nodes.node_ids)
        nodes = [{"node": n, "chunks": recorded.get(n, {}).get("chunks", 0),
                  "bytes": recorded.get(n, {}).get("bytes", 0), **self._space(n)} for n in names]
        logical = figures["logicalBytes"]
        physical = sum(n["bytes"] for n in nodes)
        unique = self.chunks.stored_chunk_bytes()
        gc = self.operations.last_event("gc")
        heal = self.operations.last_event("heal") or {}
        convert = self.operations.last_event("ec_convert")
        k, m = self.settings.ec_layout
        return {
            "scope": "store",
            "files": _files(figures),
            "logicalBytes": logical,
            "physicalBytes": physical,
            "uniqueBytes": unique,
            "dedupRatio": round(logical / unique, 4) if unique else None,
            "dedupSavedBytes": max(0, logical - unique),
            "chunks": self.chunks.count_chunks(),  # distinct stored chunks; nodes[].chunks counts their fragments
            "fragments": sum(n["chunks"] for n in nodes),
            "nodes": nodes,
            "queueDepth": queue_depth(),
            "lastGc": None if gc is None else {
                "at": iso8601(gc.get("at")), "chunksFreed": gc.get("chunks", 0), "bytesFreed": gc.get("bytes", 0),
                "seconds": gc.get("seconds"),
            },
            "tenants": [usage_figures(u) for u in self.operations.get_usage()],
            "layout": f"{k}+{m}",
            "degradedChunks": self.chunks.count_needing_heal(),
            "fragmentsHealed": heal.get("fragments", 0),
            "chunksHealed": heal.get("chunks", 0),
            "scrub": self.scrubber.status(),
            "ecConvert": None if convert is None else {
                k2: convert.get(k2) for k2 in ("running", "layout", "total", "converted", "failed", "remaining",
                                               "started", "finished")},
        }
