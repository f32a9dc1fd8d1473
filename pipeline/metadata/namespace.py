"""The namespace: buckets (``buckets``, with their configurations), S3 names (``objects``:
``(bucket, key)`` pointing at one file), multipart uploads in progress (``uploads``) and their
parts (``parts``; a part's bytes are a file of kind ``part``)."""
from __future__ import annotations

import time

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError, WriteError

from pipeline.metadata.groupcommit import COMMIT_DELAY_S, SMALL_UPLOADS, GroupCommit
from pipeline.metadata.model import KIND_PART, LIVE_STATES
from pipeline.metadata.mongo import id_range, insert_new, prefix_end


class NamespaceRepository:
    """An object's _id is "<bucket>/<key>" (a bucket name has no "/"), so that a listing is a range
    of _id in byte order, on real MongoDB and on the stand-in alike. A bucket's configurations
    (CORS, tagging, lifecycle...) are fields of its document under ``config.<name>``: one read
    serves them all, and they go with the bucket."""

    def __init__(self, db: Database):
        self.buckets = db["buckets"]
        self.objects = db["objects"]
        self.uploads = db["uploads"]
        self.parts = db["parts"]
        self.files = db["files"]  # part files, by kind
        # a small upload's name follows its records: the uploads under way come to it too
        self._names = GroupCommit(self._put_names, linger_s=COMMIT_DELAY_S,
                                  expected=lambda pending: pending + SMALL_UPLOADS())

    def insert_bucket(self, doc: dict) -> bool:
        return insert_new(self.buckets, doc)

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
        return bool(id_range(self.objects, bucket + "/", bucket + "0", 1, projection={"_id": 1}))

    def set_bucket_config(self, bucket: str, tenant: str, name: str, value: dict) -> bool:
        """Store one configuration of a tenant's bucket; False when no such bucket of that tenant."""
        return self.buckets.update_one({"_id": bucket, "tenant": tenant},
                                       {"$set": {f"config.{name}": value}}).matched_count == 1

    def unset_bucket_config(self, bucket: str, tenant: str, name: str) -> bool:
        """Drop one configuration of a tenant's bucket; False when no such bucket of that tenant."""
        return self.buckets.update_one({"_id": bucket, "tenant": tenant},
                                       {"$unset": {f"config.{name}": ""}}).matched_count == 1

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

    def put_object_name(self, doc: dict) -> dict | None:
        """Point a name at a file; returns ``{"_id", "file"}`` of the document it replaced (that file
        is to be deleted), None when the name is new. Names that concurrent requests write at the
        same moment go together (``_put_names``)."""
        return self._names.submit(doc)

    def _put_names(self, docs: list[dict]) -> list[dict | None | Exception]:
        """One insert of every name of the batch; a name that exists already (the insert's
        duplicate-key error says which) is then replaced on its own, returning what it replaced.
        The same name twice in a batch: the later one replaces the earlier, as if one after the other.
        A name alone is inserted too: most names are new, and an insert costs the stand-in a third
        less than an upsert's findAndModify (bench/standin_cost.py)."""
        try:
            self.objects.insert_many(docs, ordered=False)
            failed: dict[int, dict] = {}
        except BulkWriteError as exc:
            failed = {e["index"]: e for e in exc.details.get("writeErrors", [])}
        except PyMongoError as exc:  # nothing known of any of them: each caller answers it failed
            return [exc] * len(docs)
        results: list[dict | None | Exception] = []
        for i, doc in enumerate(docs):
            error = failed.get(i)
            if error is None:
                results.append(None)  # new
            elif error.get("code") == 11000:
                results.append(self._put_name(doc))
            else:
                results.append(WriteError(error.get("errmsg", "write error"), error.get("code"), error))
        return results

    def _put_name(self, doc: dict) -> dict | None | Exception:
        try:
            return self._replace_name(doc)
        except PyMongoError as exc:
            return exc

    def _replace_name(self, doc: dict) -> dict | None:
        fields = {k: v for k, v in doc.items() if k != "_id"}
        return self.objects.find_one_and_update({"_id": doc["_id"]}, {"$set": fields}, upsert=True,
                                                projection={"file": 1}, return_document=ReturnDocument.BEFORE)

    def insert_object_name(self, doc: dict) -> bool:
        """Create a name only where none exists (``If-None-Match: *``)."""
        return insert_new(self.objects, doc)

    def replace_object_name_if(self, doc: dict, etags: list[str] | None) -> dict | None:
        """Point an existing name at a file only while its ETag is one of ``etags`` (any ETag when
        None): the compare-and-set of ``If-Match``. Returns the document it replaced, None when the
        name is missing or its ETag differs (nothing written)."""
        query: dict = {"_id": doc["_id"]}
        if etags is not None:
            query["etag"] = {"$in": list(etags)}
        fields = {k: v for k, v in doc.items() if k != "_id"}
        return self.objects.find_one_and_update(query, {"$set": fields}, return_document=ReturnDocument.BEFORE)

    def replace_object_name_if_file(self, doc: dict, file_id: str) -> dict | None:
        """Point a name at a new file only while it still points at ``file_id`` (each write has a
        file of its own): a compare-and-set on the exact object read. Returns the document replaced,
        None when the name is gone or points elsewhere (nothing written)."""
        fields = {k: v for k, v in doc.items() if k != "_id"}
        return self.objects.find_one_and_update({"_id": doc["_id"], "file": file_id}, {"$set": fields},
                                                return_document=ReturnDocument.BEFORE)

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
        """Names with ``low <= _id < high`` (``>`` when not inclusive), in byte order: a seek on the
        ``_id`` index on MongoDB and on the stand-in alike (``mongo.id_range``)."""
        return id_range(self.objects, low, high, limit, low_inclusive)

    # the attributes of a name set apart from its bytes: "tags" (None: no tags) and "acl"
    # (pipeline.access.permissions.Acl.to_mongo(); None: the owner's FULL_CONTROL)
    OBJECT_ATTRIBUTES = ("tags", "acl", "retention", "legalHold")

    def set_object_attribute(self, name_id: str, field: str, value) -> bool:
        """Replace the tags, the ACL, the retention or the legal hold of a name; False when there is
        no such name."""
        assert field in self.OBJECT_ATTRIBUTES, field
        return self.objects.update_one({"_id": name_id}, {"$set": {field: value}}).matched_count == 1

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

    def uploads_page(self, bucket: str, after_id: str | None, limit: int) -> list[dict]:
        """A bucket's multipart uploads in progress by id, after ``after_id``."""
        query: dict = {"bucket": bucket}
        if after_id is not None:
            query["_id"] = {"$gt": after_id}
        return list(self.uploads.find(query).sort("_id", 1).limit(limit))

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
