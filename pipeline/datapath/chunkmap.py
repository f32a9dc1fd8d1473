"""A file's chunks as a person inspects them: where each one is kept, and which files share it.

Sharing is counted from the manifests (the multikey index on their hashes), at most
``SHARE_SCAN`` manifest pages per chunk. Deduplication is global, so a tenant is shown only how
many of its *own* files name a chunk: a count over every tenant's files would tell it whether
someone else stores the same content. An operator's view (``scope_tenant=None``) counts them all.
"""
from __future__ import annotations

from pipeline.metadata.model import KIND_PART, LIVE_STATES, FileDoc
from pipeline.metadata.repositories import Metadata
from pipeline.storage.chunkio import fragments, layout

SHARE_SCAN = 200  # manifest pages read per chunk to count the files that share it
SHARE_NAMES = 3  # how many of the tenant's own sharing files are named per chunk
SPOOL = "spool"  # where a chunk not yet placed by ingest is read from


def chunk_page(meta: Metadata, f: FileDoc, start: int, limit: int, viewer: str,
               scope_tenant: str | None) -> dict:
    """Entries ``[start, start + limit)`` of a file's chunk list with their layout and sharing.

    ``viewer`` is the caller's tenant (only its files are named); ``scope_tenant`` is the tenant
    whose files are counted as sharing, or None for every tenant's (operators)."""
    entries: list[tuple[int, int, str, int]] = []
    page = meta.files.manifest_page_at_index(f.id, start) if 0 <= start < f.chunk_count else None
    while page is not None and len(entries) < limit:
        for index, offset, h, _, size in page.sized(f.chunk_size, f.size).entries():
            if index >= start and len(entries) < limit:
                entries.append((index, offset, h, size))
        page = meta.files.manifest_page(f.id, page.page + 1) if len(entries) < limit else None
    docs = meta.chunks.chunk_docs(h for _, _, h, _ in entries)
    naming = {h: meta.files.files_naming_chunk(h, SHARE_SCAN) for h in {h for _, _, h, _ in entries}}
    others = meta.files.file_summaries({i for ids in naming.values() for i in ids} - {f.id})

    def counted(file_id: str) -> bool:
        s = others.get(file_id)
        return (s is not None and s["status"] in LIVE_STATES and s.get("kind") != KIND_PART
                and (scope_tenant is None or s["tenant"] == scope_tenant))

    chunks = []
    for index, offset, h, size in entries:
        sharing = [i for i in naming[h] if i != f.id and counted(i)]
        named = [{"fileId": i, "name": others[i]["name"]} for i in sharing if others[i]["tenant"] == viewer]
        doc = docs.get(h)
        chunks.append({
            "index": index, "offset": offset, "size": size, "sha256": h,
            **placement(doc),
            "sharedWith": len(sharing), "sharedCountCapped": len(naming[h]) >= SHARE_SCAN,
            "sharedFiles": named[:SHARE_NAMES],
        })
    last = entries[-1][0] if entries else None
    next_cursor = str(last + 1) if last is not None and last + 1 < f.chunk_count else None
    return {"file": f.to_json(), "scope": "tenant" if scope_tenant is not None else "store",
            "chunks": chunks, "nextCursor": next_cursor}


def placement(doc: dict | None) -> dict:
    """State, layout and the node of each fragment; a chunk ingest has not placed is in the spool."""
    if doc is None or doc.get("state") == "writing":
        return {"state": SPOOL, "layout": None, "fragments": []}
    k, m = layout(doc)
    return {"state": doc.get("state", "stored"), "layout": f"{k}+{m}",
            "fragments": [{"index": fr.get("i", 0), "node": fr.get("node"), "size": fr.get("size"),
                           "parity": fr.get("i", 0) >= k} for fr in fragments(doc)]}
