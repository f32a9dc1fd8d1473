"""Every MongoDB query of the store lives here.

Query shapes are chosen so that real MongoDB and the nx-27017 wire-protocol stand-in agree:
- chunks are claimed with ``insert_one``/``insert_many`` + DuplicateKeyError, never with a
  ``find_one_and_update`` upsert (the stand-in ignores ``$setOnInsert`` there);
- references to files are stored as 24-hex strings, never as ObjectId in a non-``_id`` field;
- timestamps are epoch seconds (floats): a datetime written by ``$set`` reads back as a string
  on the stand-in;
- no compound index includes ``_id``;
- an update's filter never uses ``$ne`` on a field that may be missing (the stand-in's updates
  match nothing then; ``$exists`` works).

Collections: ``files`` (immutable contents: size, hashes, status, manifest pages in ``manifests``),
``chunks`` (one per distinct chunk, with its layout: where each fragment lives), ``buckets`` and
``objects`` (S3 names: ``(bucket, key)`` pointing at one file), ``uploads`` (multipart uploads in
progress; their parts are files of kind ``part``), ``api_keys``, ``events`` (the last run of each
periodic job) and ``history`` (every run, for a while), ``samples`` (store figures over the last
hours) and ``usage`` (each tenant's logical and physical bytes, as last computed).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import pymongo
from bson import ObjectId
from bson.errors import InvalidId as BsonInvalidId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from pipeline.errors import InvalidId, ServiceUnavailable
from pipeline.timefmt import iso8601

QUEUED, PROCESSING, STORED, FAILED, DELETED = "queued", "processing", "stored", "failed", "deleted"
LIVE_STATES = (QUEUED, PROCESSING, STORED)
CHUNK_WRITING, CHUNK_STORED, CHUNK_DELETING = "writing", "stored", "deleting"
TOUCH_REFRESH_S = 60.0  # a chunk stamped as referenced more recently is not stamped again
KIND_FILE, KIND_PART = "file", "part"  # a part of a multipart upload is a file no listing shows
LISTED_STATES = (QUEUED, PROCESSING, STORED, FAILED)
SAMPLES_KEPT_S = 2 * 3600.0  # samples older than this are pruned at each insert
HISTORY_KEPT_S = 30 * 86400.0
SHA256_PREFIX_MIN = 4  # a shorter run of hex digits is searched as a name only
_HEX = frozenset("0123456789abcdef")


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
    sha256: str | None  # None for a file composed from others' manifests (multipart completion)
    chunk_count: int
    chunk_size: int
    status: str
    error: str | None
    created: float
    updated: float
    chunks_done: int
    md5: str | None = None
    kind: str = KIND_FILE
    bucket: str | None = None
    key: str | None = None
    error_code: str | None = None  # the domain error's code (pipeline.errors) of a failed file, when known

    @classmethod
    def from_mongo(cls, doc: dict) -> "FileDoc":
        return cls(
            id=str(doc["_id"]), tenant=doc["tenant"], name=doc["name"], size=doc["size"],
            content_type=doc.get("contentType") or "application/octet-stream",
            sha256=doc.get("sha256"), chunk_count=doc["chunkCount"], chunk_size=doc["chunkSize"],
            status=doc["status"], error=doc.get("error"), created=doc["created"],
            updated=doc.get("updated", doc["created"]), chunks_done=doc.get("chunksDone", 0),
            md5=doc.get("md5"), kind=doc.get("kind", KIND_FILE), bucket=doc.get("bucket"), key=doc.get("key"),
            error_code=doc.get("errorCode"),
        )

    @property
    def etag(self) -> str:
        """The whole-file SHA-256, or for a composed file its S3 ETag (``<md5 of part md5s>-N``)."""
        return self.sha256 or self.md5 or self.id

    @property
    def readable(self) -> bool:
        """Acknowledged and not failed or deleted: its bytes are on nodes or still in the spool."""
        return self.status in LIVE_STATES

    def to_json(self) -> dict:
        out = {
            "fileId": self.id, "name": self.name, "size": self.size, "contentType": self.content_type,
            "sha256": self.sha256, "chunkCount": self.chunk_count, "status": self.status,
            "created": iso8601(self.created), "updated": iso8601(self.updated),
        }
        if self.bucket is not None:
            out.update(bucket=self.bucket, key=self.key)
        return out


@dataclass(frozen=True)
class ManifestPage:
    """Up to ``manifest_page_size`` entries ``(sha256, xxh3, size)`` of a file's chunk list, in order.

    ``offset`` is the byte offset of the page's first entry in the file, so that a range read finds
    its first page with one query. Pages written before entries carried sizes have neither: their
    chunks are all ``chunkSize`` long but the last (``sized`` fills them in).
    """
    page: int
    first_index: int
    hashes: list[str]
    xxh3: list[str]
    sizes: list[int] | None = None
    offset: int | None = None

    @classmethod
    def from_mongo(cls, doc: dict) -> "ManifestPage":
        return cls(doc["page"], doc["first"], doc["hashes"], doc["xxh3"], doc.get("sizes"), doc.get("offset"))

    def sized(self, chunk_size: int, file_size: int) -> "ManifestPage":
        if self.sizes is not None:
            return self
        start = self.first_index * chunk_size
        sizes = [max(0, min(chunk_size, file_size - start - i * chunk_size)) for i in range(len(self.hashes))]
        return ManifestPage(self.page, self.first_index, self.hashes, self.xxh3, sizes, start)

    @property
    def end_index(self) -> int:
        return self.first_index + len(self.hashes)

    @property
    def byte_size(self) -> int:
        return sum(self.sizes or ())

    def entries(self) -> Iterator[tuple[int, int, str, str, int]]:
        """(index, byte offset, sha256, xxh3, size) of each entry."""
        offset = self.offset or 0
        for i, (h, x, n) in enumerate(zip(self.hashes, self.xxh3, self.sizes or ())):
            yield self.first_index + i, offset, h, x, n
            offset += n


class MetadataRepository:
    def __init__(self, client: pymongo.MongoClient, db_name: str):
        self.client = client
        self.db = client[db_name]
        self.files = self.db["files"]
        self.manifests = self.db["manifests"]
        self.chunks = self.db["chunks"]
        self.keys = self.db["api_keys"]
        self.events = self.db["events"]
        self.buckets = self.db["buckets"]
        self.objects = self.db["objects"]
        self.uploads = self.db["uploads"]
        self.parts = self.db["parts"]
        self.s3_credentials = self.db["s3_credentials"]
        self.history = self.db["history"]
        self.samples = self.db["samples"]
        self.usage = self.db["usage"]
        self.nodes = self.db["nodes"]

    @classmethod
    def connect(cls, url: str, db_name: str, timeout_ms: int = 3000,
                write_concern: str = "majority") -> "MetadataRepository":
        """``write_concern`` (``MINIS3_MONGO_WRITE_CONCERN``): ``majority`` so that a write that
        acknowledges an upload survives a replica-set failover; a number of members also works."""
        w: str | int = int(write_concern) if write_concern.isdigit() else write_concern
        client = pymongo.MongoClient(
            url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
            socketTimeoutMS=60_000, retryWrites=True, tz_aware=False, connect=False, w=w,
        )
        return cls(client, db_name)

    def ensure_indexes(self) -> None:
        self.files.create_index([("tenant", 1), ("created", -1)])
        self.files.create_index([("tenant", 1), ("sha256", 1)])
        self.files.create_index([("status", 1), ("updated", 1)])
        self.manifests.create_index([("file", 1), ("page", 1)])
        self.manifests.create_index([("file", 1), ("first", 1)])
        self.manifests.create_index([("file", 1), ("offset", 1)])
        self.manifests.create_index("hashes")
        self.chunks.create_index([("state", 1), ("lastRef", 1)])
        self.chunks.create_index("frags.node")
        self.chunks.create_index("needsHeal", sparse=True)
        self.keys.create_index("hash", unique=True)
        self.buckets.create_index("tenant")
        self.objects.create_index("file")
        self.uploads.create_index([("bucket", 1), ("key", 1)])
        self.uploads.create_index("updated")
        self.parts.create_index([("upload", 1), ("number", 1)])
        self.parts.create_index("file")
        self.files.create_index([("kind", 1), ("created", 1)])
        self.s3_credentials.create_index([("tenant", 1), ("created", 1)])
        self.files.create_index([("tenant", 1), ("nameFold", 1)])  # search by name prefix
        self.files.create_index([("tenant", 1), ("bucket", 1), ("key", 1)])  # search by bucket/key prefix
        self.history.create_index([("kind", 1), ("at", -1)])
        self.samples.create_index("at")

    def ping(self) -> None:
        self.client.admin.command("ping")

    # --- files -------------------------------------------------------------------------

    def insert_file(self, file_id: ObjectId, tenant: str, name: str, content_type: str, size: int,
                    sha256: str, chunk_count: int, chunk_size: int, request_id: str | None = None,
                    md5: str | None = None, kind: str = KIND_FILE, status: str = QUEUED,
                    extra: dict | None = None) -> FileDoc:
        now = time.time()
        doc = {
            "_id": file_id, "tenant": tenant, "name": name, "contentType": content_type,
            "size": size, "sha256": sha256, "chunkCount": chunk_count, "chunkSize": chunk_size,
            "status": status, "error": None, "created": now, "updated": now,
            "chunksDone": chunk_count if status == STORED else 0, "requestId": request_id, "kind": kind,
            "nameFold": name_fold(name),
            **({"md5": md5} if md5 else {}), **(extra or {}),
        }
        self.files.insert_one(doc)
        return FileDoc.from_mongo(doc)

    def set_file_name(self, file_id: str, bucket: str | None, key: str | None) -> None:
        """The S3 name a file is shown under in ``/api/files`` (None: it has none any more)."""
        fields = {"bucket": bucket, "key": key}
        if bucket is None:
            self.files.update_one({"_id": parse_file_id(file_id)}, {"$unset": fields})
        else:
            self.files.update_one({"_id": parse_file_id(file_id)}, {"$set": fields})

    def get_file(self, file_id: str, tenant: str | None = None) -> FileDoc | None:
        query: dict = {"_id": parse_file_id(file_id)}
        doc = self.files.find_one(query)
        if doc is None or (tenant is not None and doc["tenant"] != tenant):
            return None
        return FileDoc.from_mongo(doc)

    def get_files(self, file_ids: Iterable[str]) -> dict[str, FileDoc]:
        """The documents of several files by id, in one round trip (unknown ids are left out)."""
        ids = [parse_file_id(i) for i in dict.fromkeys(file_ids)]
        if not ids:
            return {}
        return {f.id: f for f in map(FileDoc.from_mongo, self.files.find({"_id": {"$in": ids}}))}

    def request_id(self, file_id: str) -> str | None:
        doc = self.files.find_one({"_id": parse_file_id(file_id)}, {"requestId": 1})
        return doc.get("requestId") if doc else None

    def find_stored_by_hash(self, tenant: str, sha256: str) -> FileDoc | None:
        docs = self.files.find({"tenant": tenant, "sha256": sha256, "status": STORED}).sort("_id", -1).limit(1)
        for doc in docs:
            return FileDoc.from_mongo(doc)
        return None

    def list_files(self, tenant: str, limit: int, after: str | None, search: str | None = None) -> list[FileDoc]:
        """Newest first by (created, _id); ``after`` is the last file id of the previous page.

        ``search`` keeps the files whose name starts with it (case-insensitively), whose S3 name
        starts with it as ``bucket/key`` (or whose bucket it names), or, for 4 to 64 hex digits,
        whose SHA-256 starts with it: each branch is a range on an index that starts with the tenant.
        """
        query: dict = {"tenant": tenant, "status": {"$in": list(LISTED_STATES)}, "kind": {"$ne": KIND_PART}}
        conditions = []
        if search:
            conditions.append({"$or": search_branches(search)})
        if after:
            oid = parse_file_id(after)
            last = self.files.find_one({"_id": oid}, {"created": 1})
            if last is None:
                return []
            conditions.append({"$or": [{"created": {"$lt": last["created"]}},
                                       {"created": last["created"], "_id": {"$lt": oid}}]})
        if len(conditions) == 1:
            query.update(conditions[0])
        elif conditions:
            query["$and"] = conditions
        cur = self.files.find(query).sort([("created", -1), ("_id", -1)]).limit(limit)
        return [FileDoc.from_mongo(d) for d in cur]

    def file_summaries(self, file_ids: Iterable[str]) -> dict[str, dict]:
        """Tenant, name, status and kind of each of these files (unknown ids are left out)."""
        oids = [parse_file_id(i) for i in set(file_ids)]
        if not oids:
            return {}
        cur = self.files.find({"_id": {"$in": oids}}, {"tenant": 1, "name": 1, "status": 1, "kind": 1})
        return {str(d["_id"]): d for d in cur}

    def stored_files_of(self, tenant: str, batch: int = 500) -> Iterator[FileDoc]:
        """A tenant's stored files, oldest first (the index on tenant and created)."""
        cur = self.files.find({"tenant": tenant, "status": STORED}).sort("created", 1).batch_size(batch)
        for doc in cur:
            yield FileDoc.from_mongo(doc)

    def tenants(self) -> list[str]:
        return sorted(self.files.distinct("tenant"))

    def stored_since(self, since: float, until: float) -> tuple[int, int]:
        """How many files became stored in ``[since, until)``, and their bytes: a stored file's
        ``updated`` is when it was stored (the index on status and updated)."""
        for d in self.files.aggregate([
                {"$match": {"status": STORED, "updated": {"$gte": since, "$lt": until}}},
                {"$group": {"_id": None, "n": {"$sum": 1}, "bytes": {"$sum": "$size"}}}]):
            return d["n"], d["bytes"]
        return 0, 0

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

    def start_processing_many(self, file_ids: list[str]) -> dict[str, FileDoc]:
        """``start_processing`` of several files in two round trips: the documents of those that are
        processing now, by id (a missing, stored, failed or deleted file is not among them)."""
        ids = [parse_file_id(i) for i in file_ids]
        self.files.update_many({"_id": {"$in": ids}, "status": {"$in": [QUEUED, PROCESSING]}},
                               {"$set": {"status": PROCESSING, "updated": time.time()}})
        found = (FileDoc.from_mongo(d) for d in self.files.find({"_id": {"$in": ids}, "status": PROCESSING}))
        return {f.id: f for f in found}

    def set_progress(self, file_id: str, chunks_done: int) -> None:
        self._transition(file_id, (PROCESSING,), {"chunksDone": chunks_done})

    def mark_stored(self, file_id: str, chunk_count: int) -> bool:
        return self._transition(file_id, (QUEUED, PROCESSING), {"status": STORED, "chunksDone": chunk_count})

    def mark_stored_many(self, chunk_counts: dict[str, int]) -> set[str]:
        """``mark_stored`` of several files (id -> chunk count) in one round trip; the ids of those
        that are stored now (by this call, or by another ingest of the same file before it)."""
        if not chunk_counts:
            return set()
        now = time.time()
        ops = [UpdateOne({"_id": parse_file_id(i), "status": {"$in": [QUEUED, PROCESSING]}},
                         {"$set": {"status": STORED, "chunksDone": n, "updated": now}})
               for i, n in chunk_counts.items()]
        if self.files.bulk_write(ops, ordered=False).matched_count == len(ops):
            return set(chunk_counts)
        ids = [parse_file_id(i) for i in chunk_counts]
        return {str(d["_id"]) for d in self.files.find({"_id": {"$in": ids}, "status": STORED}, {"_id": 1})}

    def mark_failed(self, file_id: str, error: str, missing: list[str] | None = None,
                    stored_too: bool = True, code: str | None = None) -> bool:
        """``stored_too=False`` (ingest) never fails a file that another ingest already stored.
        ``code``: the domain error's code, for programs (``error`` is for people)."""
        fields: dict = {"status": FAILED, "error": error}
        if code is not None:
            fields["errorCode"] = code
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

    def mark_deleted_many(self, file_ids: list[str]) -> None:
        """``mark_deleted`` of several files (of any tenant) in one round trip."""
        if file_ids:
            self.files.update_many({"_id": {"$in": [parse_file_id(i) for i in file_ids]}, "status": {"$ne": DELETED}},
                                   {"$set": {"status": DELETED, "updated": time.time()}})

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

    def put_manifest_page(self, file_id: str, page: int, first_index: int, offset: int,
                          hashes: list[str], xxh3: list[str], sizes: list[int]) -> None:
        self.manifests.replace_one(
            {"_id": f"{file_id}:{page:08d}"},
            {"_id": f"{file_id}:{page:08d}", "file": file_id, "page": page, "first": first_index,
             "offset": offset, "hashes": hashes, "xxh3": xxh3, "sizes": sizes, "created": time.time()},
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

    def first_manifest_pages(self, file_ids: Iterable[str]) -> dict[str, ManifestPage]:
        """The first page of each of several files, by file id, in one round trip (by page ids)."""
        ids = [f"{i}:{0:08d}" for i in file_ids]
        if not ids:
            return {}
        return {d["file"]: ManifestPage.from_mongo(d) for d in self.manifests.find({"_id": {"$in": ids}})}

    def manifest_pages(self, file_id: str, chunk_count: int,
                       first: ManifestPage | None = None) -> Iterator[ManifestPage]:
        """A file's pages in order: the first by its id (or ``first``, read already), the others,
        when there are more (most files have one page), by one query."""
        first = first or self.manifest_page(file_id, 0)
        if first is None:
            return
        yield first
        if first.end_index < chunk_count:
            yield from self.iter_manifest(file_id, from_page=1)

    def page_offsets(self, file_id: str) -> list[tuple[int | None, int]]:
        """``(byte offset, page number)`` of each page of a file, in page order (offset None on
        pages written before entries carried sizes)."""
        cur = self.manifests.find({"file": file_id}, {"page": 1, "offset": 1}).sort("page", 1)
        return [(d.get("offset"), d["page"]) for d in cur]

    def manifest_page_at_index(self, file_id: str, index: int) -> ManifestPage | None:
        """The page holding chunk ``index`` of a file (the index on file and first)."""
        cur = self.manifests.find({"file": file_id, "first": {"$lte": index}}).sort("first", -1).limit(1)
        for doc in cur:
            return ManifestPage.from_mongo(doc)
        return None

    def files_naming_chunk(self, chunk_hash: str, limit: int) -> list[str]:
        """Ids of files whose manifest names this chunk, at most ``limit`` manifest pages looked at
        (the multikey index on hashes)."""
        # $in, not equality: the stand-in matches an array's element only through $in
        cur = self.manifests.find({"hashes": {"$in": [chunk_hash]}}, {"file": 1}).limit(limit)
        return list(dict.fromkeys(d["file"] for d in cur))

    def delete_manifest(self, file_id: str) -> int:
        return self.manifests.delete_many({"file": file_id}).deleted_count

    def manifest_file_ids(self) -> list[str]:
        return list(self.manifests.distinct("file"))

    def release_manifest(self, file_id: str) -> int:
        """Drop a file's manifest, stamping its chunks as referenced until now first, so that
        GC's grace period counts from the moment the last reference went."""
        return self.release_manifests([file_id])

    def release_manifests(self, file_ids: list[str], stamp_batch: int = 1000) -> int:
        """``release_manifest`` of several files: one query for their pages, one stamp per
        ``stamp_batch`` distinct chunks (a bounded query, however large the files), one delete."""
        if not file_ids:
            return 0
        pending: set[str] = set()

        def stamp() -> None:
            self.chunks.update_many({"_id": {"$in": sorted(pending)}, "state": {"$in": [CHUNK_STORED, CHUNK_WRITING]}},
                                    {"$set": {"lastRef": time.time()}})
            pending.clear()
        for doc in self.manifests.find({"file": {"$in": list(file_ids)}}, {"hashes": 1}):
            pending.update(doc["hashes"])
            if len(pending) >= stamp_batch:
                stamp()
        if pending:
            stamp()
        return self.manifests.delete_many({"file": {"$in": list(file_ids)}}).deleted_count

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

    # --- layouts: heal, scrub, drain, convert ------------------------------------------------

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

    def set_node_draining(self, node: str, draining: bool) -> None:
        if draining:
            self.nodes.update_one({"_id": node}, {"$set": {"draining": True, "since": time.time()}}, upsert=True)
        else:
            self.nodes.delete_one({"_id": node})

    def draining_nodes(self) -> set[str]:
        return {d["_id"] for d in self.nodes.find({"draining": True}, {"_id": 1})}

    def update_event(self, kind: str, fields: dict | None = None, inc: dict | None = None) -> None:
        """Set and add to fields of a state document (scrub cursor, heal and convert counters)."""
        update: dict = {"$set": {"at": time.time(), **(fields or {})}}
        if inc:
            update["$inc"] = inc
        self.events.update_one({"_id": kind}, update, upsert=True)

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

    # --- names: buckets, objects (bucket, key) -> file, multipart uploads and their parts ----
    # An object's _id is "<bucket>/<key>" (a bucket name has no "/"), so that a listing is a range
    # of _id in byte order, on real MongoDB and on the stand-in alike.

    def insert_bucket(self, doc: dict) -> bool:
        try:
            self.buckets.insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    def get_bucket(self, name: str) -> dict | None:
        return self.buckets.find_one({"_id": name})

    def delete_bucket(self, name: str) -> bool:
        return self.buckets.delete_one({"_id": name}).deleted_count == 1

    def list_buckets(self, tenant: str) -> list[dict]:
        return list(self.buckets.find({"tenant": tenant}).sort("_id", 1))

    def list_buckets_page(self, tenant: str, prefix: str = "", after: str | None = None,
                          locations: list[str] | None = None, limit: int = 10_000) -> list[dict]:
        """A tenant's buckets by name: starting with ``prefix``, after ``after``, in ``locations``."""
        query: dict = {"tenant": tenant}
        name: dict = {}
        if after is not None and after >= prefix:
            name["$gt"] = after
        elif prefix:
            name["$gte"] = prefix
        if prefix:
            name["$lt"] = prefix_end(prefix)
        if name:
            query["_id"] = name
        if locations is not None:
            query["location"] = {"$in": locations}
        return list(self.buckets.find(query).sort("_id", 1).limit(limit))

    def bucket_has_objects(self, bucket: str) -> bool:
        return self.objects.find_one({"_id": {"$gte": bucket + "/", "$lt": bucket + "0"}}, {"_id": 1}) is not None

    def put_object_name(self, doc: dict) -> dict | None:
        """Point a name at a file; returns the document it replaced (its file is to be deleted)."""
        fields = {k: v for k, v in doc.items() if k != "_id"}
        return self.objects.find_one_and_update({"_id": doc["_id"]}, {"$set": fields}, upsert=True,
                                                return_document=ReturnDocument.BEFORE)

    def insert_object_name(self, doc: dict) -> bool:
        """Create a name only where none exists (``If-None-Match: *``)."""
        try:
            self.objects.insert_one(doc)
            return True
        except DuplicateKeyError:
            return False

    def replace_object_name_if(self, doc: dict, etags: list[str] | None) -> dict | None:
        """Point an existing name at a file only while its ETag is one of ``etags`` (any ETag when
        None): the compare-and-set of ``If-Match``. Returns the document it replaced, None when the
        name is missing or its ETag differs (nothing written)."""
        query: dict = {"_id": doc["_id"]}
        if etags is not None:
            query["etag"] = {"$in": list(etags)}
        fields = {k: v for k, v in doc.items() if k != "_id"}
        return self.objects.find_one_and_update(query, {"$set": fields}, return_document=ReturnDocument.BEFORE)

    def insert_object_names(self, docs: list[dict]) -> int:
        """Create many names at once; returns how many were created."""
        return len(self.objects.insert_many(docs, ordered=True).inserted_ids)

    def get_object_name(self, name_id: str) -> dict | None:
        return self.objects.find_one({"_id": name_id})

    def delete_object_name(self, name_id: str, file_id: str | None = None) -> dict | None:
        """Remove a name (only while it points at ``file_id``, when given); returns what was removed."""
        query: dict = {"_id": name_id}
        if file_id is not None:
            query["file"] = file_id
        return self.objects.find_one_and_delete(query)

    def object_names(self, low: str, high: str, limit: int, low_inclusive: bool = True) -> list[dict]:
        """Names with ``low <= _id < high`` (``>`` when not inclusive), in byte order."""
        query = {"_id": {"$gte" if low_inclusive else "$gt": low, "$lt": high}}
        return list(self.objects.find(query).sort("_id", 1).limit(limit))

    # A bucket's configurations (CORS, tagging; later policy, lifecycle...) are fields of its
    # document under ``config.<name>``: one read serves them all, and they go with the bucket.

    def set_bucket_config(self, bucket: str, tenant: str, name: str, value: dict) -> bool:
        """Store one configuration of a tenant's bucket; False when no such bucket of that tenant."""
        return self.buckets.update_one({"_id": bucket, "tenant": tenant},
                                       {"$set": {f"config.{name}": value}}).matched_count == 1

    def unset_bucket_config(self, bucket: str, tenant: str, name: str) -> bool:
        """Drop one configuration of a tenant's bucket; False when no such bucket of that tenant."""
        return self.buckets.update_one({"_id": bucket, "tenant": tenant},
                                       {"$unset": {f"config.{name}": ""}}).matched_count == 1

    def insert_upload(self, doc: dict) -> None:
        self.uploads.insert_one(doc)

    def get_upload(self, upload_id: str) -> dict | None:
        return self.uploads.find_one({"_id": upload_id})

    def touch_upload(self, upload_id: str) -> bool:
        """Stamp an upload as active now; False when it does not exist (aborted or completed)."""
        return self.uploads.update_one({"_id": upload_id}, {"$set": {"updated": time.time()}}).matched_count == 1

    def delete_upload(self, upload_id: str) -> bool:
        return self.uploads.delete_one({"_id": upload_id}).deleted_count == 1

    def list_uploads(self, bucket: str, prefix: str, after_key: str | None, limit: int) -> list[dict]:
        query: dict = {"bucket": bucket}
        if prefix or after_key is not None:
            low = max(prefix, after_key or "")
            key_range: dict = {"$gt" if after_key is not None and low == after_key else "$gte": low}
            if prefix:
                key_range["$lt"] = prefix_end(prefix)
            query["key"] = key_range
        return list(self.uploads.find(query).sort([("key", 1), ("created", 1)]).limit(limit))

    def upload_range(self, bucket: str, low: str, high: str | None, limit: int,
                     low_inclusive: bool = True) -> list[dict]:
        """Uploads of keys ``low <= key < high`` (``>`` when not inclusive; no bound for None),
        by key, then by initiation and id."""
        key_range: dict = {"$gte" if low_inclusive else "$gt": low}
        if high is not None:
            key_range["$lt"] = high
        return list(self.uploads.find({"bucket": bucket, "key": key_range})
                    .sort([("key", 1), ("created", 1), ("_id", 1)]).limit(limit))

    def uploads_of_key_after(self, bucket: str, key: str, created: float, upload_id: str,
                             limit: int) -> list[dict]:
        """Uploads of one key initiated after (``created``, ``upload_id``), in that order."""
        query = {"bucket": bucket, "key": key,
                 "$or": [{"created": {"$gt": created}}, {"created": created, "_id": {"$gt": upload_id}}]}
        return list(self.uploads.find(query).sort([("created", 1), ("_id", 1)]).limit(limit))

    def abandoned_uploads(self, updated_before: float, limit: int = 500) -> list[dict]:
        return list(self.uploads.find({"updated": {"$lt": updated_before}}).limit(limit))

    def put_part(self, doc: dict) -> dict | None:
        """Record a part (a file of kind part); returns the part it replaced, if any."""
        fields = {k: v for k, v in doc.items() if k != "_id"}
        return self.parts.find_one_and_update({"_id": doc["_id"]}, {"$set": fields}, upsert=True,
                                              return_document=ReturnDocument.BEFORE)

    def put_part_if_newer(self, doc: dict) -> tuple[bool, dict | None]:
        """Record a part unless one recorded under its number finished later (``finished``): the
        upload that finished last wins, whatever the order of the two records. (recorded, the part
        it replaced, or the newer part that stays when not recorded)."""
        try:
            self.parts.insert_one(doc)
            return True, None
        except DuplicateKeyError:
            pass
        fields = {k: v for k, v in doc.items() if k != "_id"}
        for _ in range(3):  # a part deleted between our insert and our update: insert again
            previous = self.parts.find_one_and_update(
                {"_id": doc["_id"], "finished": {"$lte": doc["finished"]}}, {"$set": fields},
                return_document=ReturnDocument.BEFORE)
            if previous is not None:
                return True, previous
            newer = self.parts.find_one({"_id": doc["_id"]})
            if newer is not None and "finished" not in newer:  # recorded before parts carried the time
                return True, self.put_part(doc)
            if newer is not None:
                return False, newer
            try:
                self.parts.insert_one(doc)
                return True, None
            except DuplicateKeyError:
                continue
        return False, self.parts.find_one({"_id": doc["_id"]})

    def list_parts(self, upload_id: str, after_number: int = 0, limit: int = 10_000) -> list[dict]:
        return list(self.parts.find({"upload": upload_id, "number": {"$gt": after_number}})
                    .sort("number", 1).limit(limit))

    def delete_parts(self, upload_id: str) -> int:
        return self.parts.delete_many({"upload": upload_id}).deleted_count

    def part_files(self, created_before: float, limit: int = 500) -> list[tuple[str, str]]:
        """(file id, upload id) of live part files older than ``created_before``."""
        cur = self.files.find({"kind": KIND_PART, "status": {"$in": list(LIVE_STATES)},
                               "created": {"$lt": created_before}}, {"upload": 1}).limit(limit)
        return [(str(d["_id"]), d.get("upload", "")) for d in cur]

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

    # --- S3 credentials: the access key id is the _id; the secret is stored encrypted -----------

    def insert_s3_credential(self, doc: dict) -> None:
        """Raises DuplicateKeyError when the access key id exists."""
        self.s3_credentials.insert_one(doc)

    def find_s3_credential(self, access_key_id: str) -> dict | None:
        return self.s3_credentials.find_one({"_id": access_key_id})

    def list_s3_credentials(self) -> list[dict]:
        return list(self.s3_credentials.find({}, {"nonce": 0, "ciphertext": 0}).sort("created", 1))

    def revoke_s3_credential(self, access_key_id: str, at: float) -> bool:
        res = self.s3_credentials.update_one({"_id": access_key_id, "revoked": None}, {"$set": {"revoked": at}})
        return res.modified_count == 1

    def event_history(self, kind: str, limit: int) -> list[dict]:
        """The newest runs of a periodic job, newest first."""
        return list(self.history.find({"kind": kind}, {"_id": 0, "kind": 0}).sort("at", -1).limit(limit))

    def history_kinds(self) -> list[str]:
        return sorted(self.history.distinct("kind"))

    # --- samples of the store's figures over time, and each tenant's usage ---------------------
    # A plain collection pruned by age at each insert (a capped collection bounds by size, and
    # the stand-in does not cap): one document a minute is a few hundred documents at most.

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

    # --- object tags and lifecycle rules ----------------------------------------------------------

    def set_object_tags(self, name_id: str, tags: list[list[str]] | None) -> bool:
        """Replace the tags of a name (None: no tags); False when there is no such name."""
        return self.objects.update_one({"_id": name_id}, {"$set": {"tags": tags}}).matched_count == 1

    # --- object ACLs (pipeline.permissions): the "acl" field of a name document ----------------------

    def set_object_acl(self, name_id: str, acl: dict | None) -> bool:
        """Replace the ACL of a name (None: the default, its owner's FULL_CONTROL); False when there is no such name."""
        return self.objects.update_one({"_id": name_id}, {"$set": {"acl": acl}}).matched_count == 1

    def buckets_with_config(self, name: str, after: str | None, limit: int) -> list[dict]:
        """Buckets that have configuration ``name`` (``config.<name>``), by name after ``after``."""
        query: dict = {f"config.{name}": {"$exists": True}}
        if after is not None:
            query["_id"] = {"$gt": after}
        return list(self.buckets.find(query).sort("_id", 1).limit(limit))

    def set_lifecycle_cursor(self, bucket: str, cursor: dict) -> None:
        """Where the next lifecycle run resumes in a bucket (``{"key": ..., "upload": ...}``, None:
        from the start); kept in the bucket's document, so it goes with the bucket."""
        self.buckets.update_one({"_id": bucket}, {"$set": {"lifecycleCursor": cursor}})

    def uploads_page(self, bucket: str, after_id: str | None, limit: int) -> list[dict]:
        """A bucket's multipart uploads in progress by id, after ``after_id``."""
        query: dict = {"bucket": bucket}
        if after_id is not None:
            query["_id"] = {"$gt": after_id}
        return list(self.uploads.find(query).sort("_id", 1).limit(limit))


def prefix_end(prefix: str) -> str:
    """The least string greater than every string that starts with ``prefix`` (code-point order,
    which is UTF-8 byte order): the prefix with its last character incremented."""
    for i in range(len(prefix) - 1, -1, -1):
        if ord(prefix[i]) < 0x10FFFF:
            nxt = ord(prefix[i]) + 1
            return prefix[:i] + chr(0xE000 if 0xD800 <= nxt <= 0xDFFF else nxt)  # no surrogates in UTF-8
    return "\U0010ffff" * (len(prefix) + 1)


def name_fold(name: str) -> str:
    """The form of a name that search compares: case-insensitive."""
    return name.casefold()


def search_branches(search: str) -> list[dict]:
    """The conditions, one of which a file must meet to match ``search`` (see ``list_files``)."""
    folded = name_fold(search)
    branches: list[dict] = [{"nameFold": {"$gte": folded, "$lt": prefix_end(folded)}}]
    bucket, slash, key = search.partition("/")
    if slash:
        branches.append({"bucket": bucket, "key": {"$gte": key, "$lt": prefix_end(key)}} if key else
                        {"bucket": bucket})
    else:
        branches.append({"bucket": search})
    digits = search.lower()
    if SHA256_PREFIX_MIN <= len(digits) <= 64 and set(digits) <= _HEX:
        branches.append({"sha256": {"$gte": digits, "$lt": prefix_end(digits)}})
    return branches


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, (pymongo.errors.ConnectionFailure, pymongo.errors.ServerSelectionTimeoutError))


def unavailable(exc: PyMongoError) -> ServiceUnavailable:
    return ServiceUnavailable(f"metadata store unavailable: {exc.__class__.__name__}")
