"""Files and their manifests: one document per upload in ``files`` (immutable content: size,
hashes, status, progress) and its chunk list paged in ``manifests`` (one document per page).

A manifest of one short page (a small object: ``INLINE_ENTRIES`` chunks or fewer) lives in its file's
document instead, as ``manifest``: one insert records the file and its manifest, and a read that has
the file's document has its chunk list. Every method here answers for both places, so that no
caller knows where a page is kept; a released manifest leaves the document (``$unset``), and GC
asks both places whether a chunk is named.

A new file's record (its last manifest page, then its document) goes through a group commit
(``pipeline.metadata.groupcommit``): the records of uploads that end at the same moment in one
process are written by one insert of their pages and one of their documents."""
from __future__ import annotations

import time
from typing import Iterable, Iterator

from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from pipeline.errors import InvalidId
from pipeline.metadata.model import (CHUNK_STORED, CHUNK_WRITING, DELETED, FAILED, KIND_FILE, KIND_PART,
                                     LISTED_STATES, PROCESSING, QUEUED, STORED, FileDoc, ManifestPage,
                                     parse_file_id)
from pipeline.metadata.groupcommit import COMMIT_DELAY_S, SMALL_UPLOADS, GroupCommit
from pipeline.metadata.mongo import insert_new, prefix_end

SHA256_PREFIX_MIN = 4  # a shorter run of hex digits is searched as a name only
INLINE_ENTRIES = 4  # a one-page manifest of at most this many chunks is kept in its file's document
_PAGE_FIELDS = ("page", "first", "offset", "hashes", "xxh3", "sizes")
_HEX = frozenset("0123456789abcdef")


class FileRepository:
    def __init__(self, db: Database):
        self.files = db["files"]
        self.manifests = db["manifests"]
        self.chunks = db["chunks"]  # stamped as referenced when a manifest is released
        # (last manifest page or None, file document); a small upload's record is submitted while it
        # is counted in SMALL_UPLOADS, so the pending ones are among those
        self._records = GroupCommit(self._write_records, linger_s=COMMIT_DELAY_S,
                                    expected=lambda pending: SMALL_UPLOADS())

    def insert_file(self, file_id: ObjectId, tenant: str, name: str, content_type: str, size: int,
                    sha256: str, chunk_count: int, chunk_size: int, request_id: str | None = None,
                    md5: str | None = None, kind: str = KIND_FILE, status: str = QUEUED,
                    extra: dict | None = None, last_page: dict | None = None) -> FileDoc:
        """Record a new file; ``last_page`` (``manifest_page_doc``), when given, is written just before it."""
        now = time.time()
        doc = {
            "_id": file_id, "tenant": tenant, "name": name, "contentType": content_type,
            "size": size, "sha256": sha256, "chunkCount": chunk_count, "chunkSize": chunk_size,
            "status": status, "error": None, "created": now, "updated": now,
            "chunksDone": chunk_count if status == STORED else 0, "requestId": request_id, "kind": kind,
            "nameFold": name_fold(name),
            **({"md5": md5} if md5 else {}), **(extra or {}),
        }
        if last_page is not None and last_page["page"] == 0 and len(last_page["hashes"]) <= INLINE_ENTRIES:
            doc["manifest"] = {k: last_page[k] for k in _PAGE_FIELDS}
            last_page = None
        self._records.submit((last_page, doc))
        return FileDoc.from_mongo(doc)

    def _write_records(self, records: list[tuple[dict | None, dict]]) -> list[Exception | None]:
        """Every page first, then every file document: a file is never queued without its manifest."""
        if len(records) == 1:
            return [self._write_record(*records[0])]
        try:
            pages = [page for page, _ in records if page is not None]
            if pages:
                self.manifests.insert_many(pages, ordered=False)
            self.files.insert_many([doc for _, doc in records], ordered=False)
            return [None] * len(records)
        except PyMongoError:  # which record failed: each on its own (written ones are found written)
            return [self._write_record(page, doc, again=True) for page, doc in records]

    def _write_record(self, page: dict | None, doc: dict, again: bool = False) -> Exception | None:
        try:
            if page is not None and not insert_new(self.manifests, page):  # a new file's page: an insert
                self.manifests.replace_one({"_id": page["_id"]}, page, upsert=True)  # (cheaper than an upsert)
            self.files.insert_one(doc)
        except DuplicateKeyError as exc:
            if again and self.files.find_one({"_id": doc["_id"]}, {"_id": 1}) is not None:
                return None  # the batch wrote it (a file id is new: no other writer has it)
            return exc
        except PyMongoError as exc:
            return exc
        return None

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

    def queued_many(self, file_ids: list[str]) -> dict[str, FileDoc]:
        """The documents of those of these files that wait for ingest (queued, or processing by an
        ingest that may have died), by id, in one round trip. A batch of small files is ingested in
        far less time than the stuck-file sweep waits, so it is not marked processing first (ingest is
        idempotent per file: a re-queued twin finds the work done)."""
        ids = [parse_file_id(i) for i in file_ids]
        found = self.files.find({"_id": {"$in": ids}, "status": {"$in": [QUEUED, PROCESSING]}})
        return {f.id: f for f in (FileDoc.from_mongo(d) for d in found)}

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
        oids = _valid_ids(file_ids)
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

    @staticmethod
    def manifest_page_doc(file_id: str, page: int, first_index: int, offset: int,
                          hashes: list[str], xxh3: list[str], sizes: list[int]) -> dict:
        return {"_id": f"{file_id}:{page:08d}", "file": file_id, "page": page, "first": first_index,
                "offset": offset, "hashes": hashes, "xxh3": xxh3, "sizes": sizes, "created": time.time()}

    def put_manifest_page(self, file_id: str, page: int, first_index: int, offset: int,
                          hashes: list[str], xxh3: list[str], sizes: list[int]) -> None:
        doc = self.manifest_page_doc(file_id, page, first_index, offset, hashes, xxh3, sizes)
        self.manifests.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    def _inline_page(self, file_id: str) -> ManifestPage | None:
        """The manifest kept in the file's document, if it has one."""
        try:
            oid = parse_file_id(file_id)
        except InvalidId:
            return None
        doc = self.files.find_one({"_id": oid}, {"manifest": 1})
        return ManifestPage.from_mongo(doc["manifest"]) if doc is not None and doc.get("manifest") else None

    def iter_manifest(self, file_id: str, from_page: int = 0) -> Iterator[ManifestPage]:
        cursor = self.manifests.find({"file": file_id, "page": {"$gte": from_page}}).sort("page", 1)
        paged = False
        for doc in cursor:
            paged = True
            yield ManifestPage.from_mongo(doc)
        if not paged and from_page == 0:
            inline = self._inline_page(file_id)
            if inline is not None:
                yield inline

    def manifest_page(self, file_id: str, page: int) -> ManifestPage | None:
        """One page by its id: cheaper than a query on ``file`` (about half, on nx-27017)."""
        doc = self.manifests.find_one({"_id": f"{file_id}:{page:08d}"})
        if doc is not None:
            return ManifestPage.from_mongo(doc)
        return self._inline_page(file_id) if page == 0 else None

    def first_manifest_pages(self, files: Iterable[FileDoc]) -> dict[str, ManifestPage]:
        """The first page of each of several files, by file id: from the document when it holds
        the manifest, the others in one round trip (by page ids)."""
        out: dict[str, ManifestPage] = {}
        ids = []
        for f in files:
            if f.first_page is not None:
                out[f.id] = f.first_page
            else:
                ids.append(f"{f.id}:{0:08d}")
        if ids:
            out.update((d["file"], ManifestPage.from_mongo(d)) for d in self.manifests.find({"_id": {"$in": ids}}))
        return out

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
        starts = [(d.get("offset"), d["page"]) for d in cur]
        return starts or ([(0, 0)] if self._inline_page(file_id) is not None else [])

    def manifest_page_at_index(self, file_id: str, index: int) -> ManifestPage | None:
        """The page holding chunk ``index`` of a file (the index on file and first)."""
        cur = self.manifests.find({"file": file_id, "first": {"$lte": index}}).sort("first", -1).limit(1)
        for doc in cur:
            return ManifestPage.from_mongo(doc)
        inline = self._inline_page(file_id) if index >= 0 else None
        return inline if inline is not None and index < inline.end_index else None

    def files_naming_chunk(self, chunk_hash: str, limit: int) -> list[str]:
        """Ids of files whose manifest names this chunk, at most ``limit`` manifest pages looked at
        (the multikey index on hashes)."""
        # $in, not equality: the stand-in matches an array's element only through $in
        cur = self.manifests.find({"hashes": {"$in": [chunk_hash]}}, {"file": 1}).limit(limit)
        ids = list(dict.fromkeys(d["file"] for d in cur))
        if len(ids) < limit:
            cur = self.files.find({"manifest.hashes": {"$in": [chunk_hash]}}, {"_id": 1}).limit(limit - len(ids))
            ids += [str(d["_id"]) for d in cur]
        return ids

    def delete_manifest(self, file_id: str) -> int:
        """Remove a file's manifest, wherever it is kept; how many pages went."""
        deleted = self.manifests.delete_many({"file": file_id}).deleted_count
        try:
            oid = parse_file_id(file_id)
        except InvalidId:
            return deleted
        return deleted + self.files.update_one({"_id": oid, "manifest.page": 0},
                                               {"$unset": {"manifest": ""}}).modified_count

    def manifest_file_ids(self) -> list[str]:
        """Files that own a manifest page in ``manifests``, and deleted files whose document still
        holds theirs (a live document's own manifest belongs to it for as long as it lives)."""
        kept = self.files.find({"manifest.page": 0, "status": DELETED}, {"_id": 1})
        return list(self.manifests.distinct("file")) + [str(d["_id"]) for d in kept]

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
        oids = _valid_ids(file_ids)
        inline = self.files.find({"_id": {"$in": oids}, "manifest.page": 0}, {"manifest": 1}) if oids else []
        pages = ((doc["manifest"] if "manifest" in doc else doc)
                 for cursor in (self.manifests.find({"file": {"$in": list(file_ids)}}, {"hashes": 1}), inline)
                 for doc in cursor)
        for page in pages:
            pending.update(page["hashes"])
            if len(pending) >= stamp_batch:
                stamp()
        if pending:
            stamp()
        released = self.manifests.delete_many({"file": {"$in": list(file_ids)}}).deleted_count
        if oids:
            released += self.files.update_many({"_id": {"$in": oids}, "manifest.page": 0},
                                               {"$unset": {"manifest": ""}}).modified_count
        return released

    def referenced_hashes(self, hashes: list[str]) -> set[str]:
        """Which of these chunk hashes any manifest still names."""
        pipeline = [
            {"$match": {"hashes": {"$in": hashes}}},
            {"$unwind": "$hashes"},
            {"$match": {"hashes": {"$in": hashes}}},
            {"$group": {"_id": "$hashes"}},
        ]
        named = {d["_id"] for d in self.manifests.aggregate(pipeline)}
        wanted = set(hashes)
        for doc in self.files.find({"manifest.hashes": {"$in": hashes}}, {"manifest": 1}):
            named.update(wanted.intersection(doc["manifest"]["hashes"]))
        return named


def _valid_ids(file_ids: Iterable[str]) -> list[ObjectId]:
    """The ids of these that could name a file (others name none)."""
    oids = []
    for file_id in file_ids:
        try:
            oids.append(parse_file_id(file_id))
        except InvalidId:
            continue
    return oids


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
