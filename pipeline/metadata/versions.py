"""MongoDB queries of object versions: the ``versions`` collection.

One document per version (or delete marker) of a key in a bucket that has ever been versioned.
``_id`` is ``"<bucket>/<key>\\x00<order>"`` where ``order`` is 19 digits of a descending clock
and 6 random hex digits: byte order of ``_id`` is (key ascending, newest version first), so a
page of ListObjectVersions is one range query on ``_id``, and a key's latest version is the first
document of its range. A version's id is its ``order`` (or ``"null"``, whose document still sorts
by its own ``order``). The current object also stays in ``objects`` (ListObjects reads only that).
"""
from __future__ import annotations

from pymongo.errors import DuplicateKeyError

from pipeline.metadata.mongo import id_range

LOCK_FIELDS = ("retention", "legalHold")  # object lock: each change counted in the version's lockSeq
SEPARATOR = "\x00"  # sorts before every character of a key: all of a key's versions precede "key/..."


def version_range(name_id: str) -> tuple[str, str]:
    """[low, high) of the ``_id`` of every version of one name."""
    return name_id + SEPARATOR, name_id + "\x01"


class VersionStore:
    def __init__(self, db):
        self.versions = db["versions"]
        self.objects = db["objects"]  # only to mark a current object as its key's null version

    def ensure_indexes(self) -> None:
        self.versions.create_index([("bucket", 1), ("key", 1), ("versionId", 1)])
        self.versions.create_index("file", sparse=True)

    def insert(self, doc: dict) -> None:
        self.versions.insert_one(doc)

    def upsert(self, doc: dict) -> None:
        fields = {k: v for k, v in doc.items() if k != "_id"}
        self.versions.update_one({"_id": doc["_id"]}, {"$setOnInsert": fields}, upsert=True)

    @staticmethod
    def _older_than(name_id: str, order: str) -> dict:
        """The current object of ``name_id`` when it is older than the version of ``order`` (or was
        written before versioning, without an order). The ``$or`` sits inside ``$and``: next to a
        plain ``_id`` the stand-in's writes would match by the ``$or`` alone (see ``mongo``)."""
        return {"$and": [{"_id": name_id}, {"$or": [{"order": {"$gt": order}}, {"order": {"$exists": False}}]}]}

    def name_if_newer(self, doc: dict) -> None:
        """Make ``doc`` (with its version's ``order``) the current object unless a newer version
        already is: of two racing writes the newer version ends current, whichever lands last."""
        fields = {k: v for k, v in doc.items() if k != "_id"}
        try:
            self.objects.update_one(self._older_than(doc["_id"], doc["order"]), {"$set": fields}, upsert=True)
        except DuplicateKeyError:
            pass  # a newer version is current: this one is noncurrent from the start

    def unname_if_older(self, name_id: str, order: str) -> None:
        """A delete marker of ``order`` removes the current object unless a newer version is current."""
        self.objects.delete_one(self._older_than(name_id, order))

    def mark_null_current(self, name_id: str, file_id: str) -> None:
        """The current object of a bucket being versioned the first time is its key's null version."""
        self.objects.update_one({"_id": name_id, "file": file_id}, {"$set": {"versionId": "null"}})

    def get(self, version_doc_id: str) -> dict | None:
        return self.versions.find_one({"_id": version_doc_id})

    def get_null(self, name_id: str) -> dict | None:
        found = self.nulls(name_id, 1)
        return found[0] if found else None

    def nulls(self, name_id: str, limit: int = 100) -> list[dict]:
        """A key's ``null`` versions, newest first: one, but for a moment after racing writes."""
        low, high = version_range(name_id)
        return id_range(self.versions, low, high, limit, query={"versionId": "null"})

    def delete(self, version_doc_id: str) -> dict | None:
        return self.versions.find_one_and_delete({"_id": version_doc_id})

    def latest(self, name_id: str) -> dict | None:
        low, high = version_range(name_id)
        found = id_range(self.versions, low, high, 1)
        return found[0] if found else None

    def page(self, low: str, high: str, limit: int, low_inclusive: bool = True) -> list[dict]:
        """Versions with ``low <= _id < high`` (``>`` when not inclusive), key ascending, newest first."""
        return id_range(self.versions, low, high, limit, low_inclusive)

    def bucket_has_versions(self, bucket: str) -> bool:
        return bool(id_range(self.versions, bucket + "/", bucket + "0", 1, projection={"_id": 1}))

    def set_attribute(self, version_doc_id: str, field: str, value) -> bool:
        """Replace the tags, the ACL, the retention or the legal hold of one version (the fields a
        name document has too)."""
        assert field in ("tags", "acl") + LOCK_FIELDS, field
        update: dict = {"$set": {field: value}}
        if field in LOCK_FIELDS:  # a delete that read the version before this change will not match it
            update["$inc"] = {"lockSeq": 1}
        return self.versions.update_one({"_id": version_doc_id}, update).matched_count == 1

    def delete_if_lock_unchanged(self, doc: dict) -> dict | None:
        """Remove a version only while its retention and legal hold are as in ``doc`` (read before the
        decision to remove it); None when they changed meanwhile (or the version is gone)."""
        seq = doc.get("lockSeq")
        query = {"_id": doc["_id"], "lockSeq": seq if seq is not None else {"$exists": False}}
        return self.versions.find_one_and_delete(query)

    def versions_of_file(self, file_id: str) -> list[dict]:
        """The versions that point at one file (object lock: an operator's delete of that file asks)."""
        return list(self.versions.find({"file": file_id}).limit(100))
