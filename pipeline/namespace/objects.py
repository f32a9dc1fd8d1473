"""S3 names over immutable contents: buckets, objects ``(bucket, key) -> file``, multipart uploads.

A file (``pipeline.store``) is content: bytes with an id, hashes and a manifest. An object is a
name that points at exactly one file, with the S3 attributes (ETag, checksum, user metadata,
content headers). Write order keeps every chunk referenced at every moment:
- overwrite: the new file is complete (and its manifest written) before the name points at it;
  then the old file is deleted;
- copy (onto itself too): a new file with a copy of the source's manifest, then the name, then the
  old file;
- multipart completion: the parts are files of kind ``part``; the object's file is composed from
  their manifests (no data byte moves), the name points at it, then the parts are deleted.
Bucket names are global; a bucket belongs to one tenant. Another tenant's bucket is ``Forbidden``.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from pipeline.backends import translate_backend_errors
from pipeline.cache import Generation, GenerationCache
from pipeline.errors import (BucketExists, BucketNotEmpty, EntityTooSmall, Forbidden, InvalidBucketState,
                             InvalidPart, InvalidPartOrder, NoObjectLockConfiguration, NoSuchBucket, NoSuchKey,
                             NoSuchUpload, NotReady, ObjectLockConfigurationNotFound, ObjectLockNotEnabled,
                             PreconditionFailed)
from pipeline.metadata.model import KIND_PART, QUEUED, FileDoc
from pipeline.metadata.mongo import prefix_end
from pipeline.namespace import lifecycle
from pipeline.namespace import retention as lock
from pipeline.namespace.names import valid_bucket_name, valid_key
from pipeline.namespace.paging import LIST_BATCH, RollupPace
from pipeline.namespace.versions import ENABLED, SUSPENDED, ObjectVersions, Removed

MIN_PART_SIZE = 5 << 20
MAX_PART_NUMBER = 10_000
CONDITIONAL_WRITE_TRIES = 20  # a write that loses this many compare-and-sets in a row gives up (412)


def _ever_enabled(versioning: dict) -> bool:
    """A bucket's versioning configuration says it was Enabled at some time; one written before the
    flag was kept had been Enabled once if it has any status."""
    status = versioning.get("status")
    return status == ENABLED or bool(versioning.get("everEnabled", status is not None))


def name_id(bucket: str, key: str) -> str:
    return f"{bucket}/{key}"


def file_name(key: str) -> str:
    """The name an object's file shows in /api listings: the key's last path segment."""
    return key.rsplit("/", 1)[-1]


def rollup(key: str, prefix: str, delimiter: str | None) -> str | None:
    """The common prefix ``key`` rolls up into: up to the first ``delimiter`` after ``prefix``."""
    if not delimiter or not key.startswith(prefix):
        return None
    at = key.find(delimiter, len(prefix))
    return key[:at + len(delimiter)] if at >= 0 else None


@dataclass(frozen=True)
class Bucket:
    name: str
    tenant: str
    created: float
    location: str

    @classmethod
    def from_mongo(cls, doc: dict) -> "Bucket":
        return cls(doc["_id"], doc["tenant"], doc["created"], doc.get("location", ""))


@dataclass
class ObjectAttributes:
    """What an S3 writer says about an object besides its bytes."""
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # x-amz-meta-* without the prefix
    headers: dict[str, str] = field(default_factory=dict)  # Cache-Control, Content-Disposition, ...
    checksum: dict | None = None  # {"algorithm": "CRC32", "value": base64}
    tags: list[list[str]] | None = None  # [[key, value], ...]: object tags (x-amz-tagging)
    acl: dict | None = None  # pipeline.access.permissions.Acl.to_mongo(); None: the owner's FULL_CONTROL
    retention: dict | None = None  # object lock: Retention.to_mongo(); None: the bucket's default, if any
    legal_hold: bool | None = None  # object lock: x-amz-object-lock-legal-hold

    def to_mongo(self) -> dict:
        # "tags", "acl" and the lock always written: a name overwritten without them loses the old ones, as in S3
        return {"contentType": self.content_type or "binary/octet-stream", "meta": self.metadata,
                "headers": self.headers, "checksum": self.checksum, "tags": self.tags or None, "acl": self.acl,
                "retention": self.retention, "legalHold": self.legal_hold}


@dataclass(frozen=True)
class WriteCondition:
    """What a conditional write requires of the name it writes: ``If-Match`` (the current ETag is
    one of ``if_match``; ``"*"``: any object exists), ``If-None-Match: *`` (no object exists) or
    ``If-None-Match`` with ETags (no object, or one whose ETag is none of ``none_match``)."""
    if_match: tuple[str, ...] | None = None  # unquoted ETags, or ("*",)
    if_none_match: bool = False
    none_match: tuple[str, ...] | None = None  # unquoted ETags of If-None-Match other than "*"

    def __bool__(self) -> bool:
        return self.if_match is not None or self.if_none_match or bool(self.none_match)

    def match_etags(self) -> list[str] | None:
        """The ETags If-Match accepts; None for any."""
        return None if self.if_match is None or "*" in self.if_match else list(self.if_match)


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    file_id: str
    size: int
    etag: str  # unquoted: hex MD5, or "<hex>-<parts>" for a multipart object
    last_modified: float
    content_type: str
    metadata: dict
    headers: dict
    checksum: dict | None
    part_sizes: list[int] | None  # multipart objects: each part's size, for GET ?partNumber=
    upload_id: str | None = None
    part_checksums: list[str | None] | None = None  # multipart objects: each part's checksum (base64)
    tags: tuple[tuple[str, str], ...] = ()
    version_id: str | None = None  # None in a bucket never versioned (no x-amz-version-id)
    acl: dict | None = None  # pipeline.access.permissions.Acl.to_mongo(); None: the owner's FULL_CONTROL
    retention: lock.Retention | None = None  # object lock: mode and retain-until date
    legal_hold: bool | None = None  # object lock: None when never set

    @classmethod
    def from_mongo(cls, doc: dict) -> "ObjectInfo":
        return cls(doc["bucket"], doc["key"], doc["file"], doc["size"], doc["etag"], doc["created"],
                   doc.get("contentType") or "binary/octet-stream", doc.get("meta") or {},
                   doc.get("headers") or {}, doc.get("checksum"), doc.get("partSizes"), doc.get("uploadId"),
                   doc.get("partChecksums"), tuple((k, v) for k, v in doc.get("tags") or ()), doc.get("versionId"),
                   doc.get("acl"), lock.retention_of(doc), lock.legal_hold_of(doc))


@dataclass(frozen=True)
class Upload:
    upload_id: str
    bucket: str
    key: str
    tenant: str
    created: float
    attributes: dict  # ObjectAttributes.to_mongo() of the object to be
    checksum_algorithm: str | None = None  # x-amz-checksum-algorithm at creation: every part carries one
    checksum_type: str | None = None  # COMPOSITE or FULL_OBJECT, with an algorithm

    @classmethod
    def from_mongo(cls, doc: dict) -> "Upload":
        return cls(doc["_id"], doc["bucket"], doc["key"], doc["tenant"], doc["created"], doc.get("attrs") or {},
                   doc.get("checksumAlgorithm"), doc.get("checksumType"))


@dataclass(frozen=True)
class Part:
    number: int
    etag: str
    size: int
    last_modified: float
    file_id: str
    checksum: dict | None

    @classmethod
    def from_mongo(cls, doc: dict) -> "Part":
        return cls(doc["number"], doc["etag"], doc["size"], doc["created"], doc["file"], doc.get("checksum"))


@dataclass
class Listing:
    objects: list[ObjectInfo]
    prefixes: list[str]
    truncated: bool
    next_marker: str | None  # the last key or common prefix of this page


@dataclass
class UploadListing:
    uploads: list[Upload]
    prefixes: list[str]
    truncated: bool
    next_key_marker: str | None  # the last upload's key, or the last common prefix
    next_upload_id_marker: str | None  # the last upload's id (None after a common prefix)


@translate_backend_errors
class ObjectNames:
    """Buckets, names and multipart uploads over the files of one ``ObjectStore``."""

    def __init__(self, *, namespace, versions, files, operations, redis,
                 receive: Callable[..., FileDoc], compose: Callable[..., FileDoc],
                 read: Callable[..., Iterator[bytes]], discard: Callable[[str], None],
                 discard_many: Callable[[list[str]], None], ensure_stored: Callable[[FileDoc], FileDoc],
                 enqueue: Callable[[FileDoc], None] | None = None):
        """Built by ``ObjectStore.object_names()`` from the parts it uses: the namespace, version and
        file repositories, the operations repository (where lifecycle runs record their events), Redis
        (the bucket cache's generation), and the store's file operations (receive, compose, read and
        discard a file; ``ensure_stored`` ingests one now). ``enqueue(file)`` queues the ingest of a
        file that a completion or a copy composed from files not yet ingested (their spooled chunks);
        without it that file is ingested here."""
        self.namespace = namespace
        self.files = files
        self.operations = operations
        self._receive = receive
        self._compose = compose
        self._read = read
        self._discard = discard
        self._discard_many = discard_many
        self._ensure_stored = ensure_stored
        self.enqueue = enqueue
        # bucket -> its document, read on every call: cached until a bucket is deleted anywhere
        self._buckets = GenerationCache(Generation(redis))
        self.versions = ObjectVersions(namespace, versions, discard)

    def _ingest_later(self, f: FileDoc) -> None:
        if f.status == QUEUED:
            if self.enqueue is None:
                self._ensure_stored(f)
            else:
                self.enqueue(f)

    # --- buckets ------------------------------------------------------------------------

    def create_bucket(self, tenant: str, name: str, location: str = "") -> tuple[Bucket, bool]:
        """(bucket, created now). The same owner again gets its bucket back (as AWS us-east-1)."""
        doc = {"_id": valid_bucket_name(name), "tenant": tenant, "created": time.time(), "location": location}
        existing = None
        for _ in range(3):  # a bucket deleted between our insert and our read: insert again
            if self.namespace.insert_bucket(doc):
                return Bucket.from_mongo(doc), True
            existing = self.namespace.get_bucket(name)
            if existing is not None:
                break
        if existing is None:
            raise BucketExists(f"the bucket name {name!r} is being created and deleted concurrently")
        if existing["tenant"] != tenant:
            raise BucketExists(f"the bucket name {name!r} is taken")
        return Bucket.from_mongo(existing), False

    def find_bucket(self, name: str) -> Bucket:
        """A bucket whoever owns it (the permission check reads its owner); NoSuchBucket when there is none."""
        doc = self._buckets.get(name, lambda: self.namespace.get_bucket(name))
        if doc is None:
            raise NoSuchBucket(f"no bucket named {name!r}", bucket=name)
        return Bucket.from_mongo(doc)

    def bucket(self, tenant: str, name: str) -> Bucket:
        doc = self._buckets.get(name, lambda: self.namespace.get_bucket(name))
        if doc is None:
            raise NoSuchBucket(f"no bucket named {name!r}", bucket=name)
        if doc["tenant"] != tenant:
            raise Forbidden(f"the bucket {name!r} belongs to another account", bucket=name)
        return Bucket.from_mongo(doc)

    def list_buckets(self, tenant: str, prefix: str = "", after: str | None = None,
                     locations: list[str] | None = None, limit: int | None = None) -> list[Bucket]:
        """The tenant's buckets by name; ``locations`` keeps those whose LocationConstraint is one of
        them ("" is the default region's)."""
        if not prefix and after is None and locations is None and limit is None:
            return [Bucket.from_mongo(d) for d in self.namespace.list_buckets(tenant)]
        return [Bucket.from_mongo(d) for d in
                self.namespace.list_buckets_page(tenant, prefix, after, locations, limit or 10_000)]

    def delete_bucket(self, tenant: str, name: str) -> None:
        self.bucket(tenant, name)
        if self.namespace.bucket_has_objects(name) or self.versions.versions.bucket_has_versions(name):
            raise BucketNotEmpty(f"the bucket {name!r} is not empty", bucket=name)
        for upload in self.namespace.list_uploads(name, "", None, 10_000):  # in-progress uploads go with it
            self._drop_upload(Upload.from_mongo(upload))
        self.namespace.delete_bucket(name)
        self._buckets.generation.bump()

    # --- bucket configurations: one document per sub-resource (cors, tagging...) -------------

    def bucket_config(self, tenant: str, bucket: str, name: str) -> dict | None:
        """The owner's view of one configuration of its bucket; None when it has none."""
        self.bucket(tenant, bucket)
        return self.applied_bucket_config(bucket, name)

    def applied_bucket_config(self, bucket: str, name: str) -> dict | None:
        """A configuration S3 applies to every request, whoever sends it (CORS); None when the
        bucket or the configuration does not exist."""
        doc = self._buckets.get(bucket, lambda: self.namespace.get_bucket(bucket))
        return ((doc or {}).get("config") or {}).get(name)

    def put_bucket_config(self, tenant: str, bucket: str, name: str, value: dict) -> None:
        self.bucket(tenant, bucket)
        if not self.namespace.set_bucket_config(bucket, tenant, name, value):
            raise NoSuchBucket(f"no bucket named {bucket!r}", bucket=bucket)  # deleted meanwhile
        self._buckets.generation.bump()  # cached bucket documents carry the configurations

    def delete_bucket_config(self, tenant: str, bucket: str, name: str) -> None:
        self.bucket(tenant, bucket)
        if not self.namespace.unset_bucket_config(bucket, tenant, name):
            raise NoSuchBucket(f"no bucket named {bucket!r}", bucket=bucket)
        self._buckets.generation.bump()

    # --- versioning -----------------------------------------------------------------------

    def versioning(self, bucket: str) -> str | None:
        """``Enabled``, ``Suspended``, or None for a bucket never versioned."""
        return (self.applied_bucket_config(bucket, "versioning") or {}).get("status")

    def versioning_ever_enabled(self, bucket: str) -> bool:
        """Whether the bucket's versioning was Enabled at some time (not only ever Suspended)."""
        return _ever_enabled(self.applied_bucket_config(bucket, "versioning") or {})

    def set_versioning(self, tenant: str, bucket: str, status: str) -> None:
        """PutBucketVersioning; the first time, each existing object becomes its key's null version."""
        self.bucket(tenant, bucket)
        config = self.applied_bucket_config(bucket, "versioning") or {}
        before = config.get("status")
        ObjectVersions.check_transition(before, status)
        if status == SUSPENDED and lock.enabled(self.object_lock(bucket)):
            raise InvalidBucketState("An Object Lock configuration is present on this bucket, so the versioning "
                                     "state cannot be changed.", bucket=bucket)
        ever = status == ENABLED or _ever_enabled(config)
        self.put_bucket_config(tenant, bucket, "versioning", {"status": status, "everEnabled": ever})
        if before is None:
            self.versions.enable(bucket, bucket + "/", bucket + "0")

    def remove(self, tenant: str, bucket: str, key: str, version_id: str | None = None,
               bypass_governance: bool = False) -> Removed:
        """DeleteObject: without a version id, a delete marker in a versioned bucket (the name and
        its file go in one never versioned); with one, that version for good, unless object lock
        protects it (ObjectLocked; a GOVERNANCE retention yields to ``bypass_governance``)."""
        self.bucket(tenant, bucket)
        status = self.versioning(bucket)
        if version_id is not None and (status is not None or version_id != "null"):
            return self.versions.delete_version(name_id(bucket, key), version_id, bypass_governance)
        if status is None:
            self.delete(tenant, bucket, key)
            return Removed(None, False)
        return self.versions.delete_current(status, name_id(bucket, key), bucket, key)

    # --- object lock ----------------------------------------------------------------------

    def object_lock(self, bucket: str) -> dict | None:
        """The bucket's object lock configuration (``retention.lock_config``); None without one."""
        return self.applied_bucket_config(bucket, lock.CONFIG)

    def require_object_lock(self, bucket: str) -> dict:
        config = self.object_lock(bucket)
        if not lock.enabled(config):
            raise ObjectLockNotEnabled("Bucket is missing Object Lock Configuration", bucket=bucket)
        return config

    def create_locked_bucket(self, tenant: str, name: str, location: str = "") -> tuple[Bucket, bool]:
        """CreateBucket with object lock: the lock is recorded before versioning is enabled, so that
        no PutBucketVersioning can suspend it in between."""
        bucket, created = self.create_bucket(tenant, name, location)
        if created:
            self.put_bucket_config(tenant, name, lock.CONFIG, lock.lock_config(True, None))
            self.set_versioning(tenant, name, ENABLED)
        return bucket, created

    def set_object_lock(self, tenant: str, bucket: str, default: lock.DefaultRetention | None) -> None:
        """PutObjectLockConfiguration: only on a bucket whose versioning is Enabled; never undone."""
        self.bucket(tenant, bucket)
        if self.versioning(bucket) != ENABLED:
            raise InvalidBucketState("Versioning must be 'Enabled' on the bucket to apply a Object Lock "
                                     "configuration", bucket=bucket)
        self.put_bucket_config(tenant, bucket, lock.CONFIG, lock.lock_config(True, default))

    def get_object_lock(self, tenant: str, bucket: str) -> dict:
        config = self.bucket_config(tenant, bucket, lock.CONFIG)
        if not lock.enabled(config):
            raise ObjectLockConfigurationNotFound("Object Lock configuration does not exist for this bucket",
                                                  bucket=bucket)
        return config

    def lock_state(self, tenant: str, bucket: str, key: str, version_id: str | None) -> ObjectInfo:
        """The version whose retention or legal hold a call reads or writes (the current one
        without a version id); ObjectLockNotEnabled in a bucket without object lock."""
        self.bucket(tenant, bucket)
        self.require_object_lock(bucket)
        nid = name_id(bucket, key)
        if version_id is None:
            version_id = self._current_version_id(nid, key)
        return ObjectInfo.from_mongo(self.versions.get(nid, key, version_id))

    def _current_version_id(self, nid: str, key: str) -> str:
        """The version id of a versioned key's current object; NoSuchKey (with the delete marker's
        headers when one is latest) when it has none."""
        current = self.namespace.get_object_name(nid)
        if current is None:
            self.versions.missing(nid, key)
        return current["versionId"]

    def set_retention(self, tenant: str, bucket: str, key: str, version_id: str | None,
                      wanted: lock.Retention | None, bypass_governance: bool = False,
                      now: float | None = None) -> ObjectInfo:
        """PutObjectRetention: ObjectLocked when the version's retention may not change that way."""
        info = self.lock_state(tenant, bucket, key, version_id)
        lock.check_change(info.retention, wanted, bypass_governance, time.time() if now is None else now)
        doc = self.versions.set_attribute(name_id(bucket, key), key, info.version_id, "retention",
                                          wanted.to_mongo() if wanted is not None else None)
        return ObjectInfo.from_mongo(doc)

    def set_legal_hold(self, tenant: str, bucket: str, key: str, version_id: str | None, on: bool) -> ObjectInfo:
        info = self.lock_state(tenant, bucket, key, version_id)
        return ObjectInfo.from_mongo(self.versions.set_attribute(name_id(bucket, key), key, info.version_id,
                                                                 "legalHold", on))

    def retention(self, tenant: str, bucket: str, key: str, version_id: str | None) -> ObjectInfo:
        """GetObjectRetention: NoObjectLockConfiguration when the version has none."""
        return self._lock_setting(tenant, bucket, key, version_id, "retention")

    def legal_hold(self, tenant: str, bucket: str, key: str, version_id: str | None) -> ObjectInfo:
        """GetObjectLegalHold: NoObjectLockConfiguration when it was never set."""
        return self._lock_setting(tenant, bucket, key, version_id, "legal_hold")

    def _lock_setting(self, tenant: str, bucket: str, key: str, version_id: str | None, field: str) -> ObjectInfo:
        info = self.lock_state(tenant, bucket, key, version_id)
        if getattr(info, field) is None:
            raise NoObjectLockConfiguration("The specified object does not have a ObjectLock configuration",
                                            key=key)
        return info

    # --- objects --------------------------------------------------------------------------

    def put(self, tenant: str, bucket: str, key: str, pieces: Iterable[bytes], attrs: ObjectAttributes,
            if_none_match: bool = False, request_id: str | None = None,
            size_hint: int | None = None, condition: WriteCondition | None = None) -> tuple[ObjectInfo, FileDoc]:
        """Receive the bytes into a new file, then point the name at it. ``attrs.checksum`` may be
        filled in by the pieces' iterator as it ends (a trailer checksum). Returns the object and
        its file, which the caller queues for ingest. A ``condition`` is checked before the body is
        read and again, as a compare-and-set, when the name is written."""
        condition = condition or WriteCondition(if_none_match=if_none_match)
        self.bucket(tenant, bucket)
        valid_key(key)
        self.check_write(bucket, key, condition)
        f = self._receive(tenant, file_name(key), attrs.content_type, pieces, request_id=request_id,
                          md5=True, sha256=False, extra={"bucket": bucket, "key": key}, size_hint=size_hint)
        info = self.bind(f, bucket, key, f.md5, attrs, condition=condition)
        return info, f

    def check_write(self, bucket: str, key: str, condition: WriteCondition | None) -> None:
        """Refuse a conditional write early, before any byte is received or composed: NoSuchKey for
        If-Match on a missing key, PreconditionFailed otherwise. ``bind`` decides races."""
        if not condition:
            return
        doc = self.namespace.get_object_name(name_id(bucket, key))
        if condition.if_match is not None:
            if doc is None:
                raise NoSuchKey("no such key (If-Match)", key=key)
            etags = condition.match_etags()
            if etags is not None and doc["etag"] not in etags:
                raise PreconditionFailed("the object's ETag does not match If-Match", key=key)
        if condition.if_none_match and doc is not None:
            raise PreconditionFailed("an object with this key exists (If-None-Match: *)", key=key)
        if condition.none_match and doc is not None and doc["etag"] in condition.none_match:
            raise PreconditionFailed("the object's ETag matches If-None-Match", key=key)

    def name_file(self, tenant: str, f: FileDoc, bucket: str, key: str, content_type: str | None) -> ObjectInfo:
        """Give a file uploaded through /api a name (it must carry its MD5)."""
        self.bucket(tenant, bucket)
        valid_key(key)
        self.files.set_file_name(f.id, bucket, key)
        return self.bind(f, bucket, key, f.md5, ObjectAttributes(content_type=content_type))

    def bind(self, f: FileDoc, bucket: str, key: str, etag: str, attrs: ObjectAttributes,
             if_none_match: bool = False, part_sizes: list[int] | None = None,
             upload_id: str | None = None, condition: WriteCondition | None = None,
             part_checksums: list | None = None) -> ObjectInfo:
        """Point the name at ``f``. Under a ``condition`` the write is a compare-and-set: of two
        racing conditional writes one wins; a losing write's file is discarded, like a replaced one."""
        doc = {"_id": name_id(bucket, key), "bucket": bucket, "key": key, "file": f.id, "size": f.size,
               "etag": etag, "created": time.time(), "partSizes": part_sizes, "uploadId": upload_id,
               **attrs.to_mongo()}
        if part_checksums is not None:
            doc["partChecksums"] = part_checksums
        if doc.get("retention") is None:  # a version without a mode of its own takes the bucket's default
            default = lock.default_of(self.object_lock(bucket))
            if default is not None:
                doc["retention"] = default.retention_from(doc["created"]).to_mongo()
        condition = condition or WriteCondition(if_none_match=if_none_match)
        if condition.if_match is not None and condition.if_none_match:  # contradictory: fails either way
            self._discard(f.id)
            self.check_write(bucket, key, condition)
            raise NoSuchKey("no such key (If-Match)", key=key)
        status = self.versioning(bucket)
        if status is not None:  # the version first; earlier versions keep their files
            freed, overtaken = self.versions.write(status, doc)
            try:
                if overtaken:  # a newer null version of a racing write stays (and is current)
                    return ObjectInfo.from_mongo(doc)
                info = self._bind_name(f, doc, key, condition, keep_previous=True)
            except Exception:
                self.versions.unwrite(doc)
                raise
            finally:
                for file_id in freed:  # a replaced null version's file: no version names it any more
                    self._discard(file_id)
            return info
        return self._bind_name(f, doc, key, condition, keep_previous=False)

    def _bind_name(self, f: FileDoc, doc: dict, key: str, condition: WriteCondition,
                   keep_previous: bool) -> ObjectInfo:
        if condition.if_match is not None:
            etags = condition.match_etags()
            if etags is not None and condition.none_match:
                etags = [e for e in etags if e not in condition.none_match]
            elif condition.none_match:
                return self._bind_name_unless(f, doc, key, condition.none_match, keep_previous)
            previous = self.namespace.replace_object_name_if(doc, etags)
            if previous is None:
                self._discard(f.id)
                if self.namespace.get_object_name(doc["_id"]) is None:
                    raise NoSuchKey("no such key (If-Match)", key=key)
                raise PreconditionFailed("the object's ETag does not match If-Match", key=key)
            if previous["file"] != f.id and not keep_previous:
                self._discard(previous["file"])
            return ObjectInfo.from_mongo(doc)
        if condition.if_none_match:
            if not self.namespace.insert_object_name(doc):
                self._discard(f.id)
                raise PreconditionFailed("an object with this key exists (If-None-Match: *)")
            return ObjectInfo.from_mongo(doc)
        if condition.none_match:
            return self._bind_name_unless(f, doc, key, condition.none_match, keep_previous, must_exist=False)
        if keep_previous:  # a version: current only if no newer version is
            self.versions.versions.name_if_newer(doc)
            return ObjectInfo.from_mongo(doc)
        previous = self.namespace.put_object_name(doc)
        if previous is not None and previous["file"] != f.id:
            self._discard(previous["file"])
        return ObjectInfo.from_mongo(doc)

    def _bind_name_unless(self, f: FileDoc, doc: dict, key: str, etags: tuple[str, ...], keep_previous: bool,
                          must_exist: bool = True) -> ObjectInfo:
        """If-None-Match with ETags (with If-Match: * when ``must_exist``): write the name unless the
        current object's ETag is listed. A compare-and-set on the file the name points at (unique
        to each write), retried when another write won meanwhile: of racing writes each decides
        against the object it replaces."""
        for _ in range(CONDITIONAL_WRITE_TRIES):
            current = self.namespace.get_object_name(doc["_id"])
            if current is None and must_exist:
                self._discard(f.id)
                raise NoSuchKey("no such key (If-Match)", key=key)
            if current is not None and current["etag"] in etags:
                self._discard(f.id)
                raise PreconditionFailed("the object's ETag matches If-None-Match", key=key)
            if current is None:
                if self.namespace.insert_object_name(doc):
                    return ObjectInfo.from_mongo(doc)
            elif self.namespace.replace_object_name_if_file(doc, current["file"]) is not None:
                if current["file"] != f.id and not keep_previous:
                    self._discard(current["file"])
                return ObjectInfo.from_mongo(doc)
        self._discard(f.id)
        raise PreconditionFailed("the object kept changing while a conditional write was made", key=key)

    def bind_many(self, f: FileDoc, bucket: str, keys: Iterable[str], etag: str, attrs: ObjectAttributes,
                  batch: int = 1000) -> int:
        """Point many new names (none may exist yet) at one file, ``batch`` per write: fixtures and
        benchmarks of large buckets. Deleting any of them deletes the file under the others too."""
        made, docs = 0, []
        for key in keys:
            valid_key(key)
            docs.append({"_id": name_id(bucket, key), "bucket": bucket, "key": key, "file": f.id, "size": f.size,
                         "etag": etag, "created": time.time(), "partSizes": None, "uploadId": None,
                         **attrs.to_mongo()})
            if len(docs) >= batch:
                made += self.namespace.insert_object_names(docs)
                docs = []
        return made + (self.namespace.insert_object_names(docs) if docs else 0)

    def head(self, tenant: str, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
        """The current object, or one version of it (``null`` names the object of a bucket never versioned)."""
        self.bucket(tenant, bucket)
        nid = name_id(bucket, key)
        if version_id is not None and (version_id != "null" or self.versioning(bucket) is not None):
            return ObjectInfo.from_mongo(self.versions.get(nid, key, version_id))
        doc = self.namespace.get_object_name(nid)
        if doc is None:
            if self.versioning(bucket) is not None:
                self.versions.missing(nid, key)
            raise NoSuchKey("no such key", key=key)
        return ObjectInfo.from_mongo(doc)

    def file_of(self, info: ObjectInfo) -> FileDoc:
        f = self.files.get_file(info.file_id)
        if f is None or not f.readable:
            raise NotReady(f"the object's content is {f.status if f else 'missing'}")
        return f

    def read(self, info: ObjectInfo, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        return self._read(self.file_of(info), start, stop)

    def delete(self, tenant: str, bucket: str, key: str) -> bool:
        """Remove a name and delete its file; a missing key is not an error (S3 answers 204)."""
        self.bucket(tenant, bucket)
        previous = self.namespace.delete_object_name(name_id(bucket, key))
        if previous is None:
            return False
        self._discard(previous["file"])
        return True

    def copy(self, tenant: str, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str,
             attrs: ObjectAttributes | None, condition: WriteCondition | None = None,
             src_version: str | None = None, acl: dict | None = None,
             src_tenant: str | None = None, retention: dict | None = None,
             legal_hold: bool | None = None) -> ObjectInfo:
        """CopyObject: a new file with a copy of the source's manifest (no data byte moves).
        ``attrs`` None copies the source's attributes (metadata directive COPY). ``condition``
        is the destination's (If-Match / If-None-Match of the copy request). The copy never takes
        the source's ACL: ``acl`` is the copy's (None: private), as in S3. ``src_tenant`` owns the
        source's bucket when it is not ``tenant`` (a copy its caller may read)."""
        src = self.head(src_tenant or tenant, src_bucket, src_key, src_version)
        self.bucket(tenant, dst_bucket)
        valid_key(dst_key)
        self.check_write(dst_bucket, dst_key, condition)
        src_file = self.file_of(src)
        if attrs is None:
            attrs = ObjectAttributes(src.content_type, dict(src.metadata), dict(src.headers), src.checksum,
                                     [list(t) for t in src.tags] or None)
        attrs.acl = acl
        attrs.retention, attrs.legal_hold = retention, legal_hold  # the request's, never the source's
        f = self._compose(tenant, file_name(dst_key), attrs.content_type, [src_file],
                          src_file.sha256, src_file.md5, extra={"bucket": dst_bucket, "key": dst_key})
        info = self.bind(f, dst_bucket, dst_key, src.etag, attrs, part_sizes=src.part_sizes, condition=condition,
                         part_checksums=src.part_checksums)
        self._ingest_later(f)
        return info

    def list(self, tenant: str, bucket: str, prefix: str = "", delimiter: str = "",
             after: str | None = None, max_keys: int = 1000) -> Listing:
        """Keys in byte order after ``after``, rolled up at ``delimiter`` into common prefixes.

        As S3: a common prefix counts once against ``max_keys`` and is listed only when it sorts
        after ``after``, so a marker inside a group (the last common prefix of a page, or a key under
        it) skips the whole group. A group that ends inside the batch that holds it costs nothing more;
        a larger one is skipped with one query, and batches shrink to a query per group where groups
        are large (``paging.RollupPace``). A page costs O(page) whatever lies before it: every query
        is a seek on the ``_id`` index (``NamespaceRepository.object_names``)."""
        self.bucket(tenant, bucket)
        base = bucket + "/"
        high = base + prefix_end(prefix) if prefix else bucket + "0"
        low, inclusive = base + prefix, True
        if after is not None:
            group = rollup(after, prefix, delimiter)
            if group is not None:
                low = max(low, base + prefix_end(group))
            elif base + after >= low:
                low, inclusive = base + after, False
        out = Listing([], [], False, None)
        if max_keys <= 0:
            return out
        pace = RollupPace(max_keys + 1)
        while True:
            left = max_keys - len(out.objects) - len(out.prefixes) + 1
            want = pace.batch if delimiter else min(left, LIST_BATCH)
            docs = self.namespace.object_names(low, high, want, low_inclusive=inclusive)
            skip_to, listed = None, 0  # skip_to: the end of the group being rolled up
            group_at = 0  # where in the batch the last group began
            for i, doc in enumerate(docs):
                if skip_to is not None and doc["_id"] < skip_to:
                    continue
                skip_to = None
                if len(out.objects) + len(out.prefixes) >= max_keys:
                    out.truncated = True
                    return out
                listed += 1
                key = doc["key"]
                cp = rollup(key, prefix, delimiter)
                if cp is not None:
                    out.prefixes.append(cp)
                    out.next_marker = cp
                    skip_to, group_at = base + prefix_end(cp), i
                    continue
                out.objects.append(ObjectInfo.from_mongo(doc))
                out.next_marker = key
            if len(docs) < want:
                return out
            left = max_keys - len(out.objects) - len(out.prefixes) + 1
            if skip_to is not None:  # the batch ended inside a group: skip the rest of it with one query
                low, inclusive = skip_to, True
                pace.after(group_at, listed - 1, len(docs), left)
            else:
                low, inclusive = docs[-1]["_id"], False
                pace.after(len(docs), listed, len(docs), left)

    # --- multipart uploads ---------------------------------------------------------------------

    def create_upload(self, tenant: str, bucket: str, key: str, attrs: ObjectAttributes,
                      checksum_algorithm: str | None = None, checksum_type: str | None = None) -> Upload:
        self.bucket(tenant, bucket)
        valid_key(key)
        now = time.time()
        doc = {"_id": secrets.token_urlsafe(24), "bucket": bucket, "key": key, "tenant": tenant,
               "created": now, "updated": now, "attrs": attrs.to_mongo()}
        if checksum_algorithm:
            doc.update(checksumAlgorithm=checksum_algorithm, checksumType=checksum_type)
        self.namespace.insert_upload(doc)
        return Upload.from_mongo(doc)

    def upload(self, tenant: str, bucket: str, key: str, upload_id: str) -> Upload:
        self.bucket(tenant, bucket)
        doc = self.namespace.get_upload(upload_id)
        if doc is None or doc["bucket"] != bucket or doc["key"] != key:
            raise NoSuchUpload("the specified multipart upload does not exist", uploadId=upload_id)
        return Upload.from_mongo(doc)

    def put_part(self, tenant: str, bucket: str, key: str, upload_id: str, number: int,
                 pieces: Iterable[bytes], checksum: dict | None = None,
                 request_id: str | None = None) -> tuple[Part, FileDoc]:
        """Receive a part into a file of kind part; a part uploaded again under the same number
        replaces the earlier one. ``checksum`` may be a dict that the pieces' iterator fills in as it
        ends (a trailer checksum). With a queue (``enqueue``), each part is queued for ingest as
        it arrives, so that its chunks are on their nodes while later parts still arrive: a
        completion then composes stored parts into an object that is stored at once (one that
        comes first links the spooled chunks instead, and its ingest finds the placed ones placed).
        Without one (in-process use) the completion ingests them, as the object."""
        upload = self.upload(tenant, bucket, key, upload_id)
        f = self._receive(tenant, f"{file_name(key)}.part{number}", None, pieces,
                          request_id=request_id, md5=True, sha256=False, kind=KIND_PART,
                          extra={"upload": upload.upload_id, "partNumber": number})
        part = self.record_part(upload, number, f, f.md5, checksum, finished=time.time())
        if self.enqueue is not None:
            self.enqueue(f)
        return part, f

    def record_part(self, upload: Upload, number: int, f: FileDoc, etag: str, checksum: dict | None,
                    finished: float | None = None) -> Part:
        """Record a part whose bytes finished arriving at ``finished``. Of two uploads of one part
        number the one that finished last wins, even when it is recorded first; the other's file is
        discarded (the client was answered for both, as S3 does)."""
        finished = time.time() if finished is None else finished
        doc = {"_id": f"{upload.upload_id}:{number:05d}", "upload": upload.upload_id, "number": number,
               "file": f.id, "etag": etag, "size": f.size, "created": finished, "finished": finished,
               "checksum": checksum or None}
        # the upload is alive (not aborted or completed while the part arrived) and stamped active;
        # a completion or abort that races past this finds the part (or its file, for the sweep)
        if not self.namespace.touch_upload(upload.upload_id):
            self._discard(f.id)
            raise NoSuchUpload("the specified multipart upload does not exist", uploadId=upload.upload_id)
        recorded, other = self.namespace.put_part_if_newer(doc)
        if not recorded:
            self._discard(f.id)
        elif other is not None and other["file"] != f.id:
            self._discard(other["file"])
        return Part.from_mongo(doc)

    def parts(self, upload: Upload, after_number: int = 0, limit: int = MAX_PART_NUMBER) -> list[Part]:
        return [Part.from_mongo(d) for d in self.namespace.list_parts(upload.upload_id, after_number, limit)]

    def list_uploads(self, tenant: str, bucket: str, prefix: str = "", delimiter: str = "",
                     key_marker: str | None = None, upload_id_marker: str | None = None,
                     max_uploads: int = 1000) -> UploadListing:
        """In-progress uploads in S3's order: by key, then by initiation (then id) within a key.

        After ``key_marker`` alone: uploads of later keys. With ``upload_id_marker`` (an upload of that
        key): that key's uploads initiated after it, then later keys; an upload id that is gone (completed
        or aborted since) counts as the key's last. Common prefixes roll up and are skipped as in ``list``."""
        self.bucket(tenant, bucket)
        out = UploadListing([], [], False, None, None)
        if max_uploads <= 0:
            return out
        high = prefix_end(prefix) if prefix else None
        low, inclusive = prefix, True
        cursor: tuple[str, float, str] | None = None  # (key, created, id): that key's later uploads come first
        if key_marker:
            group = rollup(key_marker, prefix, delimiter)
            if group is not None:
                low = max(low, prefix_end(group))
            elif key_marker >= low:
                low, inclusive = key_marker, False
                marker = self.namespace.get_upload(upload_id_marker) if upload_id_marker else None
                if marker is not None and marker["bucket"] == bucket and marker["key"] == key_marker \
                        and key_marker.startswith(prefix):
                    cursor = (key_marker, marker["created"], marker["_id"])
        batch = LIST_BATCH if not delimiter else 16
        while True:
            want = min(max_uploads - len(out.uploads) - len(out.prefixes) + 1, batch)
            from_cursor = cursor
            if cursor is not None:
                docs = self.namespace.uploads_of_key_after(bucket, *cursor, limit=want)
            else:
                docs = self.namespace.upload_range(bucket, low, high, want, low_inclusive=inclusive)
            for doc in docs:
                if len(out.uploads) + len(out.prefixes) >= max_uploads:
                    out.truncated = True
                    return out
                cp = rollup(doc["key"], prefix, delimiter)
                if cp is not None:
                    out.prefixes.append(cp)
                    out.next_key_marker, out.next_upload_id_marker = cp, None
                    low, inclusive, cursor, batch = prefix_end(cp), True, None, 2
                    break
                out.uploads.append(Upload.from_mongo(doc))
                out.next_key_marker, out.next_upload_id_marker = doc["key"], doc["_id"]
                low, inclusive = doc["key"], False
                cursor = (doc["key"], doc["created"], doc["_id"])
            else:
                if len(docs) == want:  # more may follow: the last key's later uploads first, then later keys
                    batch = min(batch * 4, LIST_BATCH)
                    continue
                if from_cursor is None:
                    return out
                low, inclusive, cursor = from_cursor[0], False, None  # that key is done: later keys

    def abort(self, tenant: str, bucket: str, key: str, upload_id: str) -> None:
        self._drop_upload(self.upload(tenant, bucket, key, upload_id))

    def _drop_upload(self, upload: Upload) -> None:
        """The upload record first (no part can be added after), then its parts' files."""
        self.namespace.delete_upload(upload.upload_id)
        self._discard_many([part.file_id for part in self.parts(upload)])
        self.namespace.delete_parts(upload.upload_id)

    def complete(self, tenant: str, bucket: str, key: str, upload_id: str,
                 requested: list[tuple[int, str]], condition: WriteCondition | None = None,
                 checksum_of: Callable[[Upload, list[Part]], dict | None] | None = None) -> ObjectInfo:
        """Compose the object from the listed parts (ascending numbers, gaps allowed).
        ``checksum_of(upload, parts)`` checks what the client says of the parts' checksums and
        returns the object's (or None); ``condition`` is checked before the parts are composed and
        again when the name is written. A failed condition leaves the upload as it was."""
        try:
            upload = self.upload(tenant, bucket, key, upload_id)
        except NoSuchUpload:
            done = self.namespace.get_object_name(name_id(bucket, key))  # a repeated completion
            if done is not None and done.get("uploadId") == upload_id:
                return ObjectInfo.from_mongo(done)
            raise
        self.check_write(bucket, key, condition)
        if not requested:
            raise InvalidPart("a completion must list at least one part")
        numbers = [n for n, _ in requested]
        if any(b < a for a, b in zip(numbers, numbers[1:])):
            raise InvalidPartOrder("the parts must be listed in ascending order")
        # a number listed more than once (a part uploaded again, each answer's ETag listed) is
        # composed once, from its upload that finished last, which one of the listed ETags must name
        listed: dict[int, set[str]] = {}
        for number, etag in requested:
            listed.setdefault(number, set()).add(etag.strip().strip('"'))
        have = {p.number: p for p in self.parts(upload)}
        chosen: list[Part] = []
        for number, etags in listed.items():
            part = have.get(number)
            if part is None or part.etag not in etags:
                raise InvalidPart(f"part {number} was not uploaded or its ETag does not match", partNumber=number)
            chosen.append(part)
        for part in chosen[:-1]:
            if part.size < MIN_PART_SIZE:
                raise EntityTooSmall(f"part {part.number} is {part.size} bytes; all but the last must be "
                                     f"at least {MIN_PART_SIZE}", partNumber=part.number)
        digest = hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in chosen)).hexdigest()
        etag = f"{digest}-{len(chosen)}"
        found = self.files.get_files(part.file_id for part in chosen)
        files = []
        for part in chosen:
            f = found.get(part.file_id)
            if f is None or not f.readable:
                raise InvalidPart(f"part {part.number} is no longer readable", partNumber=part.number)
            files.append(f)
        checksum = checksum_of(upload, chosen) if checksum_of is not None else None
        part_checksums = [p.checksum["value"] if p.checksum else None for p in chosen]
        attrs = ObjectAttributes(upload.attributes.get("contentType"), upload.attributes.get("meta") or {},
                                 upload.attributes.get("headers") or {}, checksum, upload.attributes.get("tags"),
                                 upload.attributes.get("acl"), upload.attributes.get("retention"),
                                 upload.attributes.get("legalHold"))
        f = self._compose(tenant, file_name(key), attrs.content_type, files, None, etag,
                               extra={"bucket": bucket, "key": key})
        info = self.bind(f, bucket, key, etag, attrs, part_sizes=[p.size for p in chosen], upload_id=upload_id,
                         condition=condition, part_checksums=part_checksums if any(part_checksums) else None)
        self._drop_upload(upload)
        self._ingest_later(f)
        return info

    def abort_abandoned(self, older_than_s: float, now: float | None = None) -> int:
        """Abort uploads nobody touched for ``older_than_s``, and delete part files whose upload is
        gone (a completion or abort that stopped half-way); returns how many uploads were aborted."""
        now = time.time() if now is None else now
        aborted = 0
        for doc in self.namespace.abandoned_uploads(now - older_than_s):
            self._drop_upload(Upload.from_mongo(doc))
            aborted += 1
        for file_id, upload_id in self.namespace.part_files(created_before=now - 3600):
            if self.namespace.get_upload(upload_id) is None:
                self._discard(file_id)
                self.namespace.delete_parts(upload_id)
        return aborted

    # --- object tags and lifecycle ----------------------------------------------------------

    def set_tags(self, tenant: str, bucket: str, key: str, tags: list[list[str]] | None,
                 version_id: str | None = None) -> ObjectInfo:
        """Replace an object's tags (None or [] removes them); its Last-Modified stays, as in S3."""
        return self._set_attribute(tenant, bucket, key, "tags", tags or None, version_id)

    def set_acl(self, tenant: str, bucket: str, key: str, acl: dict | None,
                version_id: str | None = None) -> ObjectInfo:
        """Replace an object's ACL (None: its owner's FULL_CONTROL); its Last-Modified stays, as in S3."""
        return self._set_attribute(tenant, bucket, key, "acl", acl, version_id)

    def _set_attribute(self, tenant: str, bucket: str, key: str, field: str, value,
                       version_id: str | None) -> ObjectInfo:
        """Tags or ACL of the current object or of one version (in a versioned bucket, the version's
        own document and, when it is current, the name)."""
        self.bucket(tenant, bucket)
        if self.versioning(bucket) is not None:
            nid = name_id(bucket, key)
            if version_id is None:
                version_id = self._current_version_id(nid, key)
            return ObjectInfo.from_mongo(self.versions.set_attribute(nid, key, version_id, field, value))
        if version_id not in (None, "null"):
            self.versions.get(name_id(bucket, key), key, version_id)
        if not self.namespace.set_object_attribute(name_id(bucket, key), field, value):
            raise NoSuchKey("no such key", key=key)
        return self.head(tenant, bucket, key)

    def expiration(self, bucket: str, info: "ObjectInfo", day_s: float) -> tuple[float, str] | None:
        """When the bucket's lifecycle rules will expire this current object, and by which rule
        (S3's ``x-amz-expiration``); None without such a rule. The rules come with the cached bucket."""
        rules = lifecycle.rules_from_mongo(self.applied_bucket_config(bucket, lifecycle.CONFIG))
        if not rules:
            return None
        return lifecycle.current_expiration(rules, info.key, info.size, dict(info.tags), info.last_modified, day_s)

    def expire(self, tenant: str, bucket: str, key: str, file_id: str) -> bool:
        """DeleteObject's path for a lifecycle expiration: remove the name while it still points at
        ``file_id`` (an object written since the rule matched stays), then delete its file."""
        self.bucket(tenant, bucket)
        status = self.versioning(bucket)
        if status is not None:  # S3's Expiration of a current version in a versioned bucket: a delete marker
            current = self.namespace.get_object_name(name_id(bucket, key))
            if current is None or current["file"] != file_id:
                return False
            self.versions.delete_current(status, name_id(bucket, key), bucket, key)
            return True
        previous = self.namespace.delete_object_name(name_id(bucket, key), file_id)
        if previous is None:
            return False
        self._discard(previous["file"])
        return True

    def abort_if_present(self, tenant: str, bucket: str, key: str, upload_id: str) -> bool:
        """AbortMultipartUpload's path for a lifecycle rule; False when the upload is gone meanwhile."""
        try:
            self.abort(tenant, bucket, key, upload_id)
        except NoSuchUpload:
            return False
        return True
