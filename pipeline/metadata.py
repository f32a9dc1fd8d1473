"""Every MongoDB query of the store lives here.

Query shapes are chosen so that real MongoDB and the nx-27017 wire-protocol stand-in agree:
- chunks are claimed with ``insert_one``/``insert_many`` + DuplicateKeyError, never with a
  ``find_one_and_update`` upsert (the stand-in ignores ``$setOnInsert`` there);
- references to files are stored as 24-hex strings, never as ObjectId in a non-``_id`` field;
- timestamps are epoch seconds (floats): a datetime written by ``$set`` reads back as a string
  on the stand-in;
- no compound index includes ``_id``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import pymongo
from bson import ObjectId
from bson.errors import InvalidId as BsonInvalidId
from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from pipeline.errors import InvalidId, ServiceUnavailable

QUEUED, PROCESSING, STORED, FAILED, DELETED = "queued", "processing", "stored", "failed", "deleted"
LIVE_STATES = (QUEUED, PROCESSING, STORED)
CHUNK_WRITING, CHUNK_STORED, CHUNK_DELETING = "writing", "stored", "deleting"
TOUCH_REFRESH_S = 60.0  # a chunk stamped as referenced more recently is not stamped again


def parse_file_id(value: str) -> ObjectId:
    if not isinstance(value, str) or len(value) != 24:
        raise InvalidId()
    try:
        return ObjectId(value)
    except (BsonInvalidId, TypeError):
        raise InvalidId() from None


@dataclass
class FileDoc:
    id: str
    tenant: str
    name: str
    size: int
    content_type: str
    sha256: str
    chunk_count: int
    chunk_size: int
    status: str
    error: str | None
    created: float
    updated: float
    chunks_done: int

    @classmethod
    def from_mongo(cls, doc: dict) -> "FileDoc":
        return cls(
            id=str(doc["_id"]), tenant=doc["tenant"], name=doc["name"], size=doc["size"],
            content_type=doc.get("contentType") or "application/octet-stream",
            sha256=doc["sha256"], chunk_count=doc["chunkCount"], chunk_size=doc["chunkSize"],
            status=doc["status"], error=doc.get("error"), created=doc["created"],
            updated=doc.get("updated", doc["created"]), chunks_done=doc.get("chunksDone", 0),
        )

    def to_json(self) -> dict:
        return {
            "fileId": self.id, "name": self.name, "size": self.size, "contentType": self.content_type,
            "sha256": self.sha256, "chunkCount": self.chunk_count, "status": self.status,
            "created": self.created, "updated": self.updated,
        }


@dataclass(frozen=True)
class ManifestPage:
    page: int
    first_index: int
    hashes: list[str]
    xxh3: list[str]

    @classmethod
    def from_mongo(cls, doc: dict) -> "ManifestPage":
        return cls(doc["page"], doc["first"], doc["hashes"], doc["xxh3"])


class MetadataRepository:
    def __init__(self, client: pymongo.MongoClient, db_name: str):
        self.client = client
        self.db = client[db_name]
        self.files = self.db["files"]
        self.manifests = self.db["manifests"]
        self.chunks = self.db["chunks"]
        self.keys = self.db["api_keys"]
        self.events = self.db["events"]

    @classmethod
    def connect(cls, url: str, db_name: str, timeout_ms: int = 3000) -> "MetadataRepository":
        client = pymongo.MongoClient(
            url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
            socketTimeoutMS=60_000, retryWrites=True, tz_aware=False, connect=False,
        )
        return cls(client, db_name)

    def ensure_indexes(self) -> None:
        self.files.create_index([("tenant", 1), ("created", -1)])
        self.files.create_index([("tenant", 1), ("sha256", 1)])
        self.files.create_index([("status", 1), ("updated", 1)])
        self.manifests.create_index([("file", 1), ("page", 1)])
        self.manifests.create_index([("file", 1), ("first", 1)])
        self.manifests.create_index("hashes")
        self.chunks.create_index([("state", 1), ("lastRef", 1)])
        self.chunks.create_index("node")
        self.keys.create_index("hash", unique=True)

    def ping(self) -> None:
        self.client.admin.command("ping")

    # --- files -------------------------------------------------------------------------

    def insert_file(self, file_id: ObjectId, tenant: str, name: str, content_type: str, size: int,
                    sha256: str, chunk_count: int, chunk_size: int, request_id: str | None = None) -> FileDoc:
        now = time.time()
        doc = {
            "_id": file_id, "tenant": tenant, "name": name, "contentType": content_type,
            "size": size, "sha256": sha256, "chunkCount": chunk_count, "chunkSize": chunk_size,
            "status": QUEUED, "error": None, "created": now, "updated": now, "chunksDone": 0,
            "requestId": request_id,
        }
        self.files.insert_one(doc)
        return FileDoc.from_mongo(doc)

    def get_file(self, file_id: str, tenant: str | None = None) -> FileDoc | None:
        query: dict = {"_id": parse_file_id(file_id)}
        doc = self.files.find_one(query)
        if doc is None or (tenant is not None and doc["tenant"] != tenant):
            return None
        return FileDoc.from_mongo(doc)

    def request_id(self, file_id: str) -> str | None:
        doc = self.files.find_one({"_id": parse_file_id(file_id)}, {"requestId": 1})
        return doc.get("requestId") if doc else None

    def find_stored_by_hash(self, tenant: str, sha256: str) -> FileDoc | None:
        docs = self.files.find({"tenant": tenant, "sha256": sha256, "status": STORED}).sort("_id", -1).limit(1)
        for doc in docs:
            return FileDoc.from_mongo(doc)
        return None

    def list_files(self, tenant: str, limit: int, after: str | None) -> list[FileDoc]:
        """Newest first by (created, _id); ``after`` is the last file id of the previous page."""
        query: dict = {"tenant": tenant, "status": {"$in": [QUEUED, PROCESSING, STORED, FAILED]}}
        if after:
            oid = parse_file_id(after)
            last = self.files.find_one({"_id": oid}, {"created": 1})
            if last is None:
                return []
            query["$or"] = [{"created": {"$lt": last["created"]}},
                            {"created": last["created"], "_id": {"$lt": oid}}]
        cur = self.files.find(query).sort([("created", -1), ("_id", -1)]).limit(limit)
        return [FileDoc.from_mongo(d) for d in cur]

    def _transition(self, file_id: str, from_states: Iterable[str], fields: dict) -> bool:
        fields = {**fields, "updated": time.time()}
        res = self.files.update_one(
            {"_id": parse_file_id(file_id), "status": {"$in": list(from_states)}}, {"$set": fields}
        )
        return res.matched_count == 1

    def start_processing(self, file_id: str) -> FileDoc | None:
        """A queued (or re-queued processing) file becomes processing, in one round trip: its
        document as it is now, or None when it is missing or already stored, failed or deleted."""
        doc = self.files.find_one_and_update(
            {"_id": parse_file_id(file_id), "status": {"$in": [QUEUED, PROCESSING]}},
            {"$set": {"status": PROCESSING, "updated": time.time()}}, return_document=ReturnDocument.AFTER,
        )
        return FileDoc.from_mongo(doc) if doc is not None else None

    def set_progress(self, file_id: str, chunks_done: int) -> None:
        self._transition(file_id, (PROCESSING,), {"chunksDone": chunks_done})

    def mark_stored(self, file_id: str, chunk_count: int) -> bool:
        return self._transition(file_id, (QUEUED, PROCESSING), {"status": STORED, "chunksDone": chunk_count})

    def mark_failed(self, file_id: str, error: str, missing: list[str] | None = None,
                    stored_too: bool = True) -> bool:
        """``stored_too=False`` (ingest) never fails a file that another ingest already stored."""
        fields: dict = {"status": FAILED, "error": error}
        if missing is not None:
            fields["missingChunks"] = missing[:1000]
        return self._transition(file_id, (QUEUED, PROCESSING, STORED) if stored_too else (QUEUED, PROCESSING),
                                fields)

    def mark_deleted(self, file_id: str, tenant: str) -> bool:
        res = self.files.update_one(
            {"_id": parse_file_id(file_id), "tenant": tenant, "status": {"$ne": DELETED}},
            {"$set": {"status": DELETED, "updated": time.time()}},
        )
        return res.matched_count == 1

    def files_in_states(self, states: Iterable[str], updated_before: float, limit: int = 1000) -> list[FileDoc]:
        cur = self.files.find({"status": {"$in": list(states)}, "updated": {"$lt": updated_before}}).limit(limit)
        return [FileDoc.from_mongo(d) for d in cur]

    def file_states(self, file_ids: list[str]) -> dict[str, str]:
        """Status of each of these files that has a document (unknown ids are left out)."""
        oids = []
        for file_id in file_ids:
            try:
                oids.append(parse_file_id(file_id))
            except InvalidId:
                continue
        if not oids:
            return {}
        return {str(d["_id"]): d["status"] for d in self.files.find({"_id": {"$in": oids}}, {"status": 1})}

    def iter_files(self, states: Iterable[str], batch: int = 500) -> Iterator[FileDoc]:
        for doc in self.files.find({"status": {"$in": list(states)}}).sort("_id", 1).batch_size(batch):
            yield FileDoc.from_mongo(doc)

    def touch_file(self, file_id: str) -> None:
        self.files.update_one({"_id": parse_file_id(file_id)}, {"$set": {"updated": time.time()}})

    def file_exists(self, file_id: str) -> bool:
        try:
            oid = parse_file_id(file_id)
        except InvalidId:
            return False
        return self.files.count_documents({"_id": oid}, limit=1) > 0

    def drop_file_document(self, file_id: str) -> None:
        self.files.delete_one({"_id": parse_file_id(file_id)})

    # --- manifests: one document per page of chunk hashes -------------------------------

    def put_manifest_page(self, file_id: str, page: int, first_index: int,
                          hashes: list[str], xxh3: list[str]) -> None:
        self.manifests.replace_one(
            {"_id": f"{file_id}:{page:08d}"},
            {"_id": f"{file_id}:{page:08d}", "file": file_id, "page": page, "first": first_index,
             "hashes": hashes, "xxh3": xxh3, "created": time.time()},
            upsert=True,
        )

    def iter_manifest(self, file_id: str, from_page: int = 0) -> Iterator[ManifestPage]:
        cursor = self.manifests.find({"file": file_id, "page": {"$gte": from_page}}).sort("page", 1)
        for doc in cursor:
            yield ManifestPage.from_mongo(doc)

    def manifest_page(self, file_id: str, page: int) -> ManifestPage | None:
        """One page by its id: cheaper than a query on ``file`` (about half, on nx-27017)."""
        doc = self.manifests.find_one({"_id": f"{file_id}:{page:08d}"})
        return ManifestPage.from_mongo(doc) if doc is not None else None

    def page_containing(self, file_id: str, chunk_index: int) -> int:
        cur = self.manifests.find({"file": file_id, "first": {"$lte": chunk_index}},
                                  {"page": 1}).sort("first", -1).limit(1)
        for doc in cur:
            return doc["page"]
        return 0

    def delete_manifest(self, file_id: str) -> int:
        return self.manifests.delete_many({"file": file_id}).deleted_count

    def manifest_file_ids(self) -> list[str]:
        return list(self.manifests.distinct("file"))

    def release_manifest(self, file_id: str) -> int:
        """Drop a file's manifest, stamping its chunks as referenced until now first, so that
        GC's grace period counts from the moment the last reference went."""
        for page in self.iter_manifest(file_id):
            self.chunks.update_many(
                {"_id": {"$in": sorted(set(page.hashes))}, "state": {"$in": [CHUNK_STORED, CHUNK_WRITING]}},
                {"$set": {"lastRef": time.time()}},
            )
        return self.delete_manifest(file_id)

    def referenced_hashes(self, hashes: list[str]) -> set[str]:
        """Which of these chunk hashes any manifest still names."""
        pipeline = [
            {"$match": {"hashes": {"$in": hashes}}},
            {"$unwind": "$hashes"},
            {"$match": {"hashes": {"$in": hashes}}},
            {"$group": {"_id": "$hashes"}},
        ]
        return {d["_id"] for d in self.manifests.aggregate(pipeline)}

    # --- chunks ---------------------------------------------------------------------------

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
        try:
            self.chunks.insert_one({**doc, "state": CHUNK_WRITING, "created": now, "lastRef": now})
            return True
        except DuplicateKeyError:
            return False

    def touch_chunks(self, hashes: list[str]) -> int:
        """Mark stored chunks as referenced now; returns how many of them are stored.

        Callers pass chunks that a manifest names and that they have just read as stored; such a
        document leaves ``stored`` only for GC's ``deleting`` (and GC deletes none that a manifest
        names: pipeline.maintenance), so the count is of those not in another state. A chunk
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

    def mark_chunks_stored(self, hashes: list[str]) -> int:
        """Writing chunks become stored; returns how many were writing."""
        if not hashes:
            return 0
        return self.chunks.update_many(
            {"_id": {"$in": hashes}, "state": CHUNK_WRITING},
            {"$set": {"state": CHUNK_STORED, "lastRef": time.time()}},
        ).matched_count

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

    # --- API keys: only the hash of a key is stored ----------------------------------------

    def insert_api_key(self, doc: dict) -> None:
        self.keys.insert_one(doc)

    def find_api_key(self, key_hash: str) -> dict | None:
        return self.keys.find_one({"hash": key_hash})

    def get_api_key(self, key_id: str) -> dict | None:
        return self.keys.find_one({"_id": key_id})

    def list_api_keys(self) -> list[dict]:
        return list(self.keys.find({}, {"hash": 0}).sort("created", 1))

    def revoke_api_key(self, key_id: str, at: float) -> bool:
        res = self.keys.update_one({"_id": key_id, "revoked": None}, {"$set": {"revoked": at}})
        return res.modified_count == 1

    def api_keys_exist(self) -> bool:
        return self.keys.find_one({}, {"_id": 1}) is not None  # count_documents costs 3x on nx-27017

    # --- figures ----------------------------------------------------------------------------

    def stats(self, tenant: str | None = None) -> dict:
        """Files by status and logical bytes: the whole store's, with chunks per node, or (with
        ``tenant``) that tenant's files only and nothing about chunks, which all tenants share."""
        own: dict = {} if tenant is None else {"tenant": tenant}
        by_status = {d["_id"]: d["n"] for d in self.files.aggregate(
            ([{"$match": own}] if own else []) + [{"$group": {"_id": "$status", "n": {"$sum": 1}}}])}
        logical = 0
        for d in self.files.aggregate([{"$match": {**own, "status": STORED}},
                                       {"$group": {"_id": None, "bytes": {"$sum": "$size"}}}]):
            logical = d["bytes"]
        if tenant is not None:
            return {"filesByStatus": by_status, "logicalBytes": logical}
        per_node = {d["_id"]: {"chunks": d["n"], "bytes": d["bytes"]} for d in self.chunks.aggregate(
            [{"$match": {"state": CHUNK_STORED}},
             {"$group": {"_id": "$node", "n": {"$sum": 1}, "bytes": {"$sum": "$size"}}}])}
        return {"filesByStatus": by_status, "logicalBytes": logical, "perNode": per_node}

    def record_event(self, kind: str, data: dict) -> None:
        self.events.replace_one({"_id": kind}, {"_id": kind, "at": time.time(), **data}, upsert=True)

    def last_event(self, kind: str) -> dict | None:
        return self.events.find_one({"_id": kind})


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, (pymongo.errors.ConnectionFailure, pymongo.errors.ServerSelectionTimeoutError))


def unavailable(exc: PyMongoError) -> ServiceUnavailable:
    return ServiceUnavailable(f"metadata store unavailable: {exc.__class__.__name__}")
