"""Object versions: a name becomes a stack of versions once its bucket is versioned.

A bucket's versioning is ``None`` (never versioned), ``Enabled`` or ``Suspended``; it never goes
back to ``None``. In a versioned bucket every version (and delete marker) of a key is a document of
the ``versions`` collection (``pipeline.metadata.versions``), and the current version, when it is not a
delete marker, is also the key's document in ``objects``, which ListObjects, GET and HEAD read as
before. A version points at exactly one file, and only deleting the version (or replacing the
``null`` version while versioning is suspended) deletes that file: GC's liveness of files and chunks
needs nothing more, and versions that repeat content share chunks through global dedup.

Write order keeps every chunk referenced: the new version is written before the name points at it;
a removed version's file is deleted after both documents stop naming it.
"""
from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Callable

from pipeline.errors import (DeleteMarkerFound, IllegalVersioningState, InvalidVersionId, NoSuchKey,
                             NoSuchVersion, ObjectLocked)
from pipeline.metadata.versions import SEPARATOR, VersionStore
from pipeline.namespace import retention
from pipeline.namespace.paging import LIST_BATCH, RollupPace

ENABLED, SUSPENDED = "Enabled", "Suspended"
log = logging.getLogger(__name__)

NULL = "null"
FOLLOW_TRIES = 20  # reads and compare-and-sets of one removal while others race it
_VERSION_ID = re.compile(r"\d{19}[0-9a-f]{6}")
_CLOCK_TOP = 1 << 62  # the descending clock: newer versions get smaller orders


def new_order(now_ns: int | None = None) -> str:
    """The sort order (and id) of a new version: later writes sort first."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    return f"{_CLOCK_TOP - now_ns:019d}{secrets.token_hex(3)}"


def valid_version_id(version_id: str) -> str:
    if version_id != NULL and not _VERSION_ID.fullmatch(version_id or ""):
        raise InvalidVersionId("Invalid version id specified", versionId=version_id)
    return version_id


def version_doc_id(name_id: str, order: str) -> str:
    return name_id + SEPARATOR + order


def order_of(doc: dict) -> str:
    return doc["_id"].rsplit(SEPARATOR, 1)[1]


@dataclass(frozen=True)
class Removed:
    """What a DeleteObject did: the version id it wrote or removed, and whether that is a marker."""
    version_id: str | None
    delete_marker: bool


@dataclass(frozen=True)
class VersionEntry:
    doc: dict  # the version's document: a marker has no file
    is_latest: bool

    @property
    def marker(self) -> bool:
        return bool(self.doc.get("marker"))


@dataclass
class VersionListing:
    entries: list[VersionEntry]
    prefixes: list[str]
    truncated: bool
    next_key_marker: str | None
    next_version_id_marker: str | None


class ObjectVersions:
    """The version stacks of names; used by ``ObjectNames`` for buckets that were ever versioned."""

    def __init__(self, namespace, versions: VersionStore, discard: Callable[[str], None]):
        self.names = namespace  # the objects collection
        self.versions: VersionStore = versions
        self.discard = discard  # ObjectStore.discard: deletes a file no name points at

    # --- bucket state --------------------------------------------------------------------

    def enable(self, bucket: str, names_low: str, names_high: str) -> None:
        """First versioning of a bucket: each existing object becomes its key's ``null`` version."""
        low, inclusive = names_low, True
        while True:
            docs = self.names.object_names(low, names_high, 1000, low_inclusive=inclusive)
            for doc in docs:
                if doc.get("versionId") is None:
                    order = new_order(int(doc["created"] * 1e9))
                    self.versions.upsert({**doc, "_id": version_doc_id(doc["_id"], order), "versionId": NULL,
                                          "order": order})
                    self.versions.mark_null_current(doc["_id"], doc["file"])
            if len(docs) < 1000:
                return
            low, inclusive = docs[-1]["_id"], False

    @staticmethod
    def check_transition(current: str | None, wanted: str) -> None:
        """Enabled and Suspended, from any state; never back to unversioned."""
        if wanted not in (ENABLED, SUSPENDED):
            raise IllegalVersioningState("The versioning status must be Enabled or Suspended")

    # --- writes ----------------------------------------------------------------------------

    def write(self, status: str, doc: dict) -> tuple[list[str], bool]:
        """Record ``doc`` (a name's document) as the key's newest version. Returns the files no
        version references any more (a replaced ``null`` version's), to be deleted after the name is
        written, and whether the write was overtaken: a racing write of the same key's ``null``
        version that is newer stays instead of this one, and is named current here (the caller
        names nothing)."""
        order = new_order()
        doc["order"] = order
        doc["versionId"] = NULL if status == SUSPENDED else order
        own = version_doc_id(doc["_id"], order)
        self.versions.insert({**doc, "_id": own})
        if status != SUSPENDED:
            return [], False
        return self._settle_nulls(doc["_id"], own)  # the null version it replaces goes

    def _settle_nulls(self, name_id: str, own: str) -> tuple[list[str], bool]:
        """After a write of a key's ``null`` version (``own``) in a Suspended bucket, the newest
        ``null`` version stays and every older one goes: the one it replaces, and those of racing
        writes that it overtook. Only older ones: a slower write never removes the version of a
        newer one, whose file may be named already. When the one that stays is another write's, it is
        made current here (``own``'s caller names nothing). (The files of those removed, to be deleted
        once no name points at them; whether ``own`` was overtaken.)"""
        nulls = self.versions.nulls(name_id)
        if not nulls:
            return [], False
        keep = nulls[0]
        freed = []
        for n in nulls[1:]:
            gone = self.versions.delete(n["_id"])
            if gone is not None and gone.get("file") and gone["file"] != keep.get("file"):
                freed.append(gone["file"])
        overtaken = keep["_id"] != own
        if overtaken:
            self._follow_latest(name_id)
        return freed, overtaken

    def unwrite(self, doc: dict) -> None:
        """Undo ``write`` of a conditional write that lost its compare-and-set."""
        latest = self.versions.latest(doc["_id"])
        if latest is not None and latest.get("file") == doc["file"]:
            self.versions.delete(latest["_id"])

    def delete_current(self, status: str, name_id: str, bucket: str, key: str) -> Removed:
        """DeleteObject without a version id: a delete marker becomes the key's latest version."""
        order = new_order()
        vid = NULL if status == SUSPENDED else order
        own = version_doc_id(name_id, order)
        self.versions.insert({"_id": own, "bucket": bucket, "key": key,
                              "versionId": vid, "marker": True, "created": time.time(), "order": order})
        self.versions.unname_if_older(name_id, order)
        if status == SUSPENDED:  # the null version it replaces goes
            freed, _ = self._settle_nulls(name_id, own)
            for file_id in freed:
                self.discard(file_id)
        return Removed(vid, True)

    def find(self, name_id: str, version_id: str) -> dict | None:
        valid_version_id(version_id)
        if version_id == NULL:
            return self.versions.get_null(name_id)
        return self.versions.get(version_doc_id(name_id, version_id))

    def delete_version(self, name_id: str, version_id: str, bypass_governance: bool = False) -> Removed:
        """Remove one version for good; the next one (if any, and not a marker) becomes current.
        A missing version is not an error, as in S3. A version object lock protects is never
        removed (ObjectLocked), whoever asks: S3 clients, lifecycle rules, operators."""
        for _ in range(3):
            doc = self.find(name_id, version_id)
            if doc is None:
                return Removed(version_id, False)
            retention.check_remove(doc, bypass_governance, time.time())
            if self.versions.delete_if_lock_unchanged(doc) is not None:
                break  # else a retention or legal hold was set meanwhile: decide again
        else:
            raise ObjectLocked("the object's lock is changing; try again", key=doc.get("key"))
        self._follow_latest(name_id)
        if doc.get("file"):
            self.discard(doc["file"])
        return Removed(doc["versionId"], bool(doc.get("marker")))

    def _follow_latest(self, name_id: str) -> None:
        """After a version is removed (or a write is overtaken by a newer one), the current object is
        the latest version (none when that is a marker or there is none). Removals of one key's
        versions may race (one DeleteObjects sent by five clients at once): each reads the name and the latest version, writes with a
        compare-and-set on the name as it read it, and returns only once it has read the two agreeing
        after its own removal; so the last to return leaves them agreeing, and no name is left
        pointing at a removed version's file. A name written before the bucket was versioned (no
        version id yet) is left as it is."""
        for _ in range(FOLLOW_TRIES):
            current = self.names.get_object_name(name_id)
            if current is not None and current.get("versionId") is None:
                return
            latest = self.versions.latest(name_id)
            if latest is None or latest.get("marker"):
                if current is None:
                    return
                self.names.delete_object_name(name_id, current["file"])
                continue
            if current is not None and (current["versionId"], current["file"]) == (latest["versionId"], latest["file"]):
                return
            doc = {k: v for k, v in latest.items() if k != "_id"} | {"_id": name_id}
            if current is None:
                self.names.insert_object_name(doc)
            else:
                self.names.replace_object_name_if_file(doc, current["file"])
        log.warning("the current object of %r kept changing while a version was removed; left to the "
                    "next removal or write", name_id)

    def get(self, name_id: str, key: str, version_id: str) -> dict:
        """The document of one version that has content: NoSuchVersion, or DeleteMarkerFound for a marker."""
        doc = self.find(name_id, version_id)
        if doc is None:
            raise NoSuchVersion("The specified version does not exist.", key=key, versionId=version_id)
        if doc.get("marker"):
            raise DeleteMarkerFound("The specified method is not allowed against a delete marker.", key=key,
                                    versionId=doc["versionId"], lastModified=doc["created"], method_not_allowed=True)
        return doc

    def missing(self, name_id: str, key: str) -> None:
        """A key without a current object: NoSuchKey, saying so when its latest version is a marker."""
        latest = self.versions.latest(name_id)
        if latest is not None and latest.get("marker"):
            raise DeleteMarkerFound("The specified key does not exist.", key=key, versionId=latest["versionId"],
                                    lastModified=latest["created"], method_not_allowed=False)
        raise NoSuchKey("no such key", key=key)

    def set_attribute(self, name_id: str, key: str, version_id: str, field: str, value) -> dict:
        """Replace the tags, the ACL, the retention or the legal hold of one version, and of the
        current name when it is that version."""
        doc = self.get(name_id, key, version_id)
        self.versions.set_attribute(doc["_id"], field, value)
        current = self.names.get_object_name(name_id)
        if current is not None and current.get("versionId") == doc["versionId"]:
            self.names.set_object_attribute(name_id, field, value)
        return {**doc, field: value}

    # --- listing ---------------------------------------------------------------------------

    def list(self, bucket: str, prefix: str, delimiter: str, key_marker: str, version_id_marker: str,
             max_keys: int, rollup, prefix_end) -> VersionListing:
        """ListObjectVersions: keys in byte order, each key's versions newest first, common prefixes
        counting once; one range query per batch on ``_id`` (a seek on its index), batches paced as
        ``ObjectNames.list``'s (``paging.RollupPace``)."""
        base = bucket + "/"
        high = base + prefix_end(prefix) if prefix else bucket + "0"
        low, inclusive = base + prefix, True
        mid_key = None  # the key whose first listed version is not its latest
        if key_marker:
            group = rollup(key_marker, prefix, delimiter)
            if group is not None:
                low = max(low, base + prefix_end(group))
            else:
                marker_doc = self.find(base + key_marker, version_id_marker) if version_id_marker else None
                if marker_doc is not None and marker_doc["_id"] >= low:
                    low, inclusive, mid_key = marker_doc["_id"], False, key_marker
                elif base + key_marker + "\x01" > low:
                    low, inclusive = base + key_marker + "\x01", True
        out = VersionListing([], [], False, None, None)
        if max_keys <= 0:
            return out
        last_key = mid_key
        pace = RollupPace(max_keys + 1)
        while True:
            batch = pace.batch if delimiter else min(max_keys - len(out.entries) - len(out.prefixes) + 1, LIST_BATCH)
            docs = self.versions.page(low, high, batch, low_inclusive=inclusive)
            skip_to, listed, group_at = None, 0, 0
            for i, doc in enumerate(docs):
                if skip_to is not None and doc["_id"] < skip_to:
                    continue
                skip_to = None
                key = doc["key"]
                cp = rollup(key, prefix, delimiter)
                if cp is not None and out.prefixes and out.prefixes[-1] == cp:
                    continue
                if len(out.entries) + len(out.prefixes) >= max_keys:
                    out.truncated = True
                    return out
                listed += 1
                if cp is not None:
                    out.prefixes.append(cp)
                    out.next_key_marker, out.next_version_id_marker = cp, None
                    skip_to, group_at = base + prefix_end(cp), i
                    last_key = None
                    continue
                out.entries.append(VersionEntry(doc, is_latest=key != last_key))
                last_key = key
                out.next_key_marker, out.next_version_id_marker = key, doc["versionId"]
            if len(docs) < batch:
                return out
            left = max_keys - len(out.entries) - len(out.prefixes) + 1
            if skip_to is not None:
                low, inclusive = skip_to, True
                pace.after(group_at, listed - 1, len(docs), left)
            else:
                low, inclusive = docs[-1]["_id"], False
                pace.after(len(docs), listed, len(docs), left)
