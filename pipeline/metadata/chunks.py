"""Chunks: one document per distinct chunk in ``chunks``, with its layout (where each fragment
lives), its state (``writing`` -> ``stored`` -> ``deleting``) and what GC and heal need. Every change
of a stored chunk is a compare-and-set on its state (and on ``fv``, its fragments' version)."""
from __future__ import annotations

import time
from typing import Iterable, Iterator

from pymongo import UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from pipeline.metadata.model import CHUNK_DELETING, CHUNK_STORED, CHUNK_WRITING
from pipeline.metadata.mongo import insert_new

TOUCH_REFRESH_S = 60.0  # a chunk stamped as referenced more recently is not stamped again


class ChunkRepository:
    def __init__(self, db: Database):
        self.chunks = db["chunks"]

    def chunk_docs(self, hashes: Iterable[str]) -> dict[str, dict]:
        ids = list(set(hashes))
        if not ids:
            return {}
        return {d["_id"]: d for d in self.chunks.find({"_id": {"$in": ids}})}

    def claim_chunks(self, claims: list[dict]) -> set[str]:
        """Insert 'writing' documents; returns the hashes this call claimed (others existed)."""
        if not claims:
            return set()
        now = time.time()
        docs = [{**c, "state": CHUNK_WRITING, "created": now, "lastRef": now} for c in claims]
        try:
            self.chunks.insert_many(docs, ordered=False)
            return {d["_id"] for d in docs}
        except BulkWriteError as exc:
            failed = {docs[e["index"]]["_id"] for e in exc.details.get("writeErrors", []) if e.get("code") == 11000}
            others = [e for e in exc.details.get("writeErrors", []) if e.get("code") != 11000]
            if others:
                raise
            return {d["_id"] for d in docs} - failed

    def claim_chunk(self, doc: dict) -> bool:
        now = time.time()
        return insert_new(self.chunks, {**doc, "state": CHUNK_WRITING, "created": now, "lastRef": now})

    def touch_chunks(self, hashes: list[str]) -> int:
        """Mark stored chunks as referenced now; returns how many of them are stored.

        Callers pass chunks that a manifest names and that they have just read as stored; such a
        document leaves ``stored`` only for GC's ``deleting`` (and GC deletes none that a manifest
        names: pipeline.maintenance.garbage), so the count is of those not in another state. A chunk
        stamped less than ``TOUCH_REFRESH_S`` ago keeps its stamp. For a thousand chunks on
        nx-27017: rewriting every stamp took about 100 ms and reading every document back 25 ms;
        these two queries match few documents and take about 12 ms.
        """
        if not hashes:
            return 0
        hashes = list(set(hashes))
        now = time.time()
        self.chunks.update_many({"_id": {"$in": hashes}, "state": CHUNK_STORED,
                                 "lastRef": {"$lt": now - TOUCH_REFRESH_S}}, {"$set": {"lastRef": now}})
        other = self.chunks.find({"_id": {"$in": hashes}, "state": {"$ne": CHUNK_STORED}}, {"_id": 1})
        return len(hashes) - len(list(other))

    def drop_writing_claims(self, hashes: list[str]) -> int:
        """Remove claims that were never written (their upload was deleted during ingest)."""
        if not hashes:
            return 0
        return self.chunks.delete_many({"_id": {"$in": hashes}, "state": CHUNK_WRITING}).deleted_count

    def mark_chunks_stored(self, hashes: list[str], layouts: dict[str, dict] | None = None) -> int:
        """Writing chunks become stored; returns how many were writing. ``layouts[h]`` gives the
        fragments written (with their checksums) and whether some are missing (``needsHeal``)."""
        if not hashes:
            return 0
        now = time.time()
        layouts = layouts or {}
        plain = [h for h in hashes if h not in layouts]
        matched = 0
        if plain:
            matched += self.chunks.update_many(
                {"_id": {"$in": plain}, "state": CHUNK_WRITING},
                {"$set": {"state": CHUNK_STORED, "lastRef": now}},
            ).matched_count
        ops = []
        for h in hashes:
            if h in layouts:
                fields = {"state": CHUNK_STORED, "lastRef": now, "frags": layouts[h]["frags"]}
                if layouts[h].get("needsHeal"):
                    fields["needsHeal"] = True
                ops.append(UpdateOne({"_id": h, "state": CHUNK_WRITING}, {"$set": fields}))
        if ops:
            matched += self.chunks.bulk_write(ops, ordered=False).matched_count
        return matched

    def flag_heal(self, chunk_hash: str) -> bool:
        """Mark a stored chunk as needing heal; True only for the call that flagged it (so that a
        read of a degraded chunk queues one heal, not one per read)."""
        # ``$exists``, not ``$ne: True``: the stand-in's updates never match ``$ne`` on a missing field
        return self.chunks.update_one({"_id": chunk_hash, "state": CHUNK_STORED, "needsHeal": {"$exists": False}},
                                      {"$set": {"needsHeal": True}}).modified_count == 1

    def flag_heal_many(self, hashes: list[str]) -> list[str]:
        """``flag_heal`` for many chunks; returns those this call flagged (a concurrent caller may
        flag some of the same: each then queues a heal of them, and heal is idempotent)."""
        fresh = [d["_id"] for d in self.chunks.find({"_id": {"$in": list(hashes)}, "state": CHUNK_STORED,
                                                     "needsHeal": {"$exists": False}}, {"_id": 1})]
        if fresh:
            self.chunks.update_many({"_id": {"$in": fresh}, "state": CHUNK_STORED, "needsHeal": {"$exists": False}},
                                    {"$set": {"needsHeal": True}})
        return fresh

    def chunks_needing_heal(self, after: str | None = None, limit: int = 500) -> list[dict]:
        query: dict = {"needsHeal": True}
        if after is not None:
            query["_id"] = {"$gt": after}
        return list(self.chunks.find(query).sort("_id", 1).limit(limit))

    def count_needing_heal(self) -> int:
        return self.chunks.count_documents({"needsHeal": True})

    def get_chunk(self, chunk_hash: str) -> dict | None:
        return self.chunks.find_one({"_id": chunk_hash})

    def set_chunk_layout(self, doc: dict, frags: list[dict], needs_heal: bool = False,
                         k: int | None = None, m: int | None = None) -> bool:
        """Compare-and-set a stored chunk's fragments (and layout): only while it is stored and
        nobody changed its fragments since ``doc`` was read (``fv``)."""
        query: dict = {"_id": doc["_id"], "state": CHUNK_STORED}
        query["fv"] = doc["fv"] if "fv" in doc else {"$exists": False}
        fields: dict = {"frags": frags, "fv": doc.get("fv", 0) + 1}
        if k is not None:
            fields.update(k=k, m=m)
        update: dict = {"$set": fields}
        if needs_heal:
            fields["needsHeal"] = True
            if "node" in doc:
                update["$unset"] = {"node": ""}
        else:
            update["$unset"] = {"needsHeal": "", **({"node": ""} if "node" in doc else {})}
        return self.chunks.update_one(query, update).modified_count == 1

    def clear_heal_flag(self, doc: dict) -> bool:
        query: dict = {"_id": doc["_id"], "state": CHUNK_STORED}
        query["fv"] = doc["fv"] if "fv" in doc else {"$exists": False}
        return self.chunks.update_one(query, {"$unset": {"needsHeal": ""}}).modified_count == 1

    def stored_chunks(self, after: str | None = None, limit: int = 500, whole_only: bool = False) -> list[dict]:
        """One page of stored chunks in hash order after ``after`` (``whole_only``: 1+0 ones)."""
        query: dict = {"state": CHUNK_STORED}
        if after is not None:
            query["_id"] = {"$gt": after}
        if whole_only:
            query["$or"] = [{"k": {"$exists": False}}, {"k": 1}]
        return list(self.chunks.find(query).sort("_id", 1).limit(limit))

    def stored_chunk_bytes(self) -> int:
        """Bytes of the distinct stored chunks (before their layout's overhead)."""
        for d in self.chunks.aggregate([{"$match": {"state": CHUNK_STORED}},
                                        {"$group": {"_id": None, "bytes": {"$sum": "$size"}}}]):
            return d["bytes"]
        return 0

    def count_chunks(self, whole_only: bool = False) -> int:
        query: dict = {"state": CHUNK_STORED}
        if whole_only:
            query["$or"] = [{"k": {"$exists": False}}, {"k": 1}]
        return self.chunks.count_documents(query)

    def chunks_on_node(self, node: str, after: str | None = None, limit: int = 500) -> list[dict]:
        """Stored chunks with a fragment on ``node``, in hash order after ``after``."""
        query: dict = {"state": CHUNK_STORED,
                       "$or": [{"frags.node": node}, {"node": node, "frags": {"$exists": False}}]}
        if after is not None:
            query["_id"] = {"$gt": after}
        return list(self.chunks.find(query).sort("_id", 1).limit(limit))

    def node_has_fragments(self, node: str) -> bool:
        return self.chunks.find_one({"$or": [{"frags.node": node}, {"node": node, "frags": {"$exists": False}}]},
                                    {"_id": 1}) is not None

    def gc_candidates(self, cutoff: float, limit: int, after: str | None = None) -> list[dict]:
        """Chunks nobody referenced since ``cutoff``, in hash order after ``after`` (one page)."""
        query: dict = {"state": {"$in": [CHUNK_STORED, CHUNK_WRITING]}, "lastRef": {"$lt": cutoff}}
        if after is not None:
            query["_id"] = {"$gt": after}
        return list(self.chunks.find(query).sort("_id", 1).limit(limit))

    def begin_chunk_delete(self, chunk_hash: str, cutoff: float, from_state: str) -> bool:
        """Compare-and-set: take a chunk for deletion only if nobody referenced it since cutoff."""
        res = self.chunks.update_one(
            {"_id": chunk_hash, "state": from_state, "lastRef": {"$lt": cutoff}},
            {"$set": {"state": CHUNK_DELETING, "prevState": from_state, "deleting": time.time()}},
        )
        return res.modified_count == 1

    def cancel_chunk_delete(self, chunk_hash: str, state: str) -> bool:
        """Give a chunk that GC took back to the state it had, as referenced now."""
        res = self.chunks.update_one(
            {"_id": chunk_hash, "state": CHUNK_DELETING},
            {"$set": {"state": state, "lastRef": time.time()}, "$unset": {"prevState": "", "deleting": ""}},
        )
        return res.modified_count == 1

    def chunks_being_deleted(self, since_before: float | None = None) -> list[dict]:
        query: dict = {"state": CHUNK_DELETING}
        if since_before is not None:
            query["deleting"] = {"$lt": since_before}
        return list(self.chunks.find(query))

    def finish_chunk_delete(self, chunk_hash: str) -> None:
        self.chunks.delete_one({"_id": chunk_hash, "state": CHUNK_DELETING})

    def all_chunks(self, batch: int = 1000) -> Iterator[dict]:
        yield from self.chunks.find({}).batch_size(batch)
