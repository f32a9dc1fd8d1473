"""Store-wide figures for operators: files, logical and physical bytes, nodes, queue, last GC.

Logical bytes are what users stored (the sizes of stored files); physical bytes are what the
nodes hold (each distinct stored chunk once). Their ratio is what deduplication saves.
"""
from __future__ import annotations

from pipeline.backends import translated
from pipeline.metadata import DELETED, FAILED, PROCESSING, QUEUED, STORED

FILE_STATES = (QUEUED, PROCESSING, STORED, FAILED, DELETED)


def queue_depth(redis_client, queue: str) -> int:
    """Messages waiting in a Celery queue on the Redis transport (a Redis list named after it)."""
    return int(redis_client.llen(queue))


@translated
def store_stats(store, queue: str) -> dict:
    figures = store.repo.stats()
    by_status = {state: figures["filesByStatus"].get(state, 0) for state in FILE_STATES}
    recorded = figures["perNode"]
    # configured nodes first (an empty one shows zeros), then any node only the metadata knows
    names = list(store.chunks.node_ids) + sorted(n for n in recorded if n not in store.chunks.node_ids)
    nodes = [{"node": n, "chunks": recorded.get(n, {}).get("chunks", 0),
              "bytes": recorded.get(n, {}).get("bytes", 0)} for n in names]
    logical = figures["logicalBytes"]
    physical = sum(n["bytes"] for n in nodes)
    gc = store.repo.last_event("gc")
    return {
        "files": {"total": sum(by_status.values()), "byStatus": by_status},
        "logicalBytes": logical,
        "physicalBytes": physical,
        "dedupRatio": round(logical / physical, 4) if physical else None,
        "chunks": sum(n["chunks"] for n in nodes),
        "nodes": nodes,
        "queueDepth": queue_depth(store.redis, queue),
        "lastGc": None if gc is None else {
            "at": gc.get("at"), "chunksFreed": gc.get("chunks", 0), "bytesFreed": gc.get("bytes", 0),
            "seconds": gc.get("seconds"),
        },
    }
