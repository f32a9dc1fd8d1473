"""Operations: the last run of each periodic job and state documents (``events``), every run for
a while (``history``), samples of the store's figures (``samples``), each tenant's usage as last
computed (``usage``), node records (``nodes``: draining), and the store's figures."""
from __future__ import annotations

import time

from pymongo.database import Database

from pipeline.metadata.model import CHUNK_STORED, KIND_PART, STORED

SAMPLES_KEPT_S = 2 * 3600.0  # samples older than this are pruned at each insert
HISTORY_KEPT_S = 30 * 86400.0


class OperationsRepository:
    """Samples are a plain collection pruned by age at each insert (a capped collection bounds by
    size, and the stand-in does not cap): one document a minute is a few hundred documents at most."""

    def __init__(self, db: Database):
        self.files = db["files"]  # figures
        self.chunks = db["chunks"]  # figures
        self.events = db["events"]
        self.history = db["history"]
        self.samples = db["samples"]
        self.usage = db["usage"]
        self.nodes = db["nodes"]

    def stats(self, tenant: str | None = None) -> dict:
        """Files by status and logical bytes: the whole store's, with chunks per node, or (with
        ``tenant``) that tenant's files only and nothing about chunks, which all tenants share."""
        own: dict = {"kind": {"$ne": KIND_PART}}  # parts count once, in the object composed of them
        if tenant is not None:
            own["tenant"] = tenant
        by_status = {d["_id"]: d["n"] for d in self.files.aggregate(
            [{"$match": own}, {"$group": {"_id": "$status", "n": {"$sum": 1}}}])}
        logical = 0
        for d in self.files.aggregate([{"$match": {**own, "status": STORED}},
                                       {"$group": {"_id": None, "bytes": {"$sum": "$size"}}}]):
            logical = d["bytes"]
        if tenant is not None:
            return {"filesByStatus": by_status, "logicalBytes": logical}
        per_node: dict[str, dict] = {}
        for d in self.chunks.aggregate([{"$match": {"state": CHUNK_STORED, "frags": {"$exists": True}}},
                                        {"$unwind": "$frags"},
                                        {"$group": {"_id": "$frags.node", "n": {"$sum": 1},
                                                    "bytes": {"$sum": "$frags.size"}}}]):
            per_node[d["_id"]] = {"chunks": d["n"], "bytes": d["bytes"]}
        for d in self.chunks.aggregate([{"$match": {"state": CHUNK_STORED, "frags": {"$exists": False}}},
                                        {"$group": {"_id": "$node", "n": {"$sum": 1},
                                                    "bytes": {"$sum": "$size"}}}]):  # one-copy documents of before
            cur = per_node.setdefault(d["_id"], {"chunks": 0, "bytes": 0})
            cur["chunks"] += d["n"]
            cur["bytes"] += d["bytes"]
        return {"filesByStatus": by_status, "logicalBytes": logical, "perNode": per_node}

    def record_event(self, kind: str, data: dict) -> None:
        """The last run of a periodic job (``events``) and one more entry of its ``history``."""
        now = time.time()
        self.events.replace_one({"_id": kind}, {"_id": kind, "at": now, **data}, upsert=True)
        self.history.insert_one({"kind": kind, "at": now, **data})
        self.history.delete_many({"kind": kind, "at": {"$lt": now - HISTORY_KEPT_S}})

    def last_event(self, kind: str) -> dict | None:
        return self.events.find_one({"_id": kind})

    def update_event(self, kind: str, fields: dict | None = None, inc: dict | None = None) -> None:
        """Set and add to fields of a state document (scrub cursor, heal and convert counters)."""
        update: dict = {"$set": {"at": time.time(), **(fields or {})}}
        if inc:
            update["$inc"] = inc
        self.events.update_one({"_id": kind}, update, upsert=True)

    def event_history(self, kind: str, limit: int) -> list[dict]:
        """The newest runs of a periodic job, newest first."""
        return list(self.history.find({"kind": kind}, {"_id": 0, "kind": 0}).sort("at", -1).limit(limit))

    def history_kinds(self) -> list[str]:
        return sorted(self.history.distinct("kind"))

    def add_sample(self, sample: dict) -> None:
        self.samples.insert_one(dict(sample))
        self.samples.delete_many({"at": {"$lt": sample["at"] - SAMPLES_KEPT_S}})

    def samples_since(self, since: float, limit: int = 1000) -> list[dict]:
        """Samples taken at or after ``since``, oldest first."""
        return list(self.samples.find({"at": {"$gte": since}}, {"_id": 0}).sort("at", 1).limit(limit))

    def last_sample(self) -> dict | None:
        for doc in self.samples.find({}, {"_id": 0}).sort("at", -1).limit(1):
            return doc
        return None

    def put_usage(self, tenant: str, usage: dict) -> None:
        self.usage.replace_one({"_id": tenant}, {"_id": tenant, **usage}, upsert=True)

    def get_usage(self, tenant: str | None = None) -> list[dict]:
        """The last computed usage of one tenant, or of every tenant (by name)."""
        query = {} if tenant is None else {"_id": tenant}
        return [{"tenant": d.pop("_id"), **d} for d in self.usage.find(query).sort("_id", 1)]

    def drop_usage_except(self, tenants: list[str]) -> None:
        self.usage.delete_many({"_id": {"$nin": tenants}})

    def set_node_draining(self, node: str, draining: bool) -> None:
        if draining:
            self.nodes.update_one({"_id": node}, {"$set": {"draining": True, "since": time.time()}}, upsert=True)
        else:
            self.nodes.delete_one({"_id": node})

    def draining_nodes(self) -> set[str]:
        return {d["_id"] for d in self.nodes.find({"draining": True}, {"_id": 1})}
