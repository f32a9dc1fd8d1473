"""Store-wide figures for operators: files, logical and physical bytes, nodes, queue, last GC.

Logical bytes are what users stored (the sizes of stored files); unique bytes are the distinct
stored chunks (their ratio is what deduplication saves); physical bytes are what the nodes hold:
every fragment, so 1.5x the unique bytes in 2+1. ``chunks`` counts distinct chunks, ``fragments``
(and each node's ``chunks``) the files on nodes.
"""
from __future__ import annotations

from pipeline.metadata import DELETED, FAILED, PROCESSING, QUEUED, STORED

FILE_STATES = (QUEUED, PROCESSING, STORED, FAILED, DELETED)


def queue_depth(redis_client, queue: str) -> int:
    """Messages waiting in a Celery queue on the Redis transport (a Redis list named after it)."""
    return int(redis_client.llen(queue))


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
    unique = store.repo.stored_chunk_bytes()
    gc = store.repo.last_event("gc")
    heal = store.repo.last_event("heal") or {}
    convert = store.repo.last_event("ec_convert")
    from pipeline.scrub import scrub_status

    k, m = store.settings.ec_layout
    return {
        "files": {"total": sum(by_status.values()), "byStatus": by_status},
        "logicalBytes": logical,
        "physicalBytes": physical,
        "uniqueBytes": unique,
        "dedupRatio": round(logical / unique, 4) if unique else None,
        "chunks": store.repo.count_chunks(),  # distinct stored chunks; nodes[].chunks counts their fragments
        "fragments": sum(n["chunks"] for n in nodes),
        "nodes": nodes,
        "queueDepth": queue_depth(store.redis, queue),
        "lastGc": None if gc is None else {
            "at": gc.get("at"), "chunksFreed": gc.get("chunks", 0), "bytesFreed": gc.get("bytes", 0),
            "seconds": gc.get("seconds"),
        },
        "layout": f"{k}+{m}",
        "degradedChunks": store.repo.count_needing_heal(),
        "fragmentsHealed": heal.get("fragments", 0),
        "chunksHealed": heal.get("chunks", 0),
        "scrub": scrub_status(store),
        "ecConvert": None if convert is None else {
            k2: convert.get(k2) for k2 in ("running", "layout", "total", "converted", "failed", "remaining",
                                           "started", "finished")},
    }
