"""The one place that knows MongoDB as such: the client, the indexes, and the rules that keep
every query shape accepted by real MongoDB and by the nx-27017 wire-protocol stand-in
(``../shared/design.md``). Every repository of this package follows them:

- chunks are claimed with ``insert_one``/``insert_many`` + DuplicateKeyError, never with a
  ``find_one_and_update`` upsert (the stand-in ignores ``$setOnInsert`` there);
- references to files are stored as 24-hex strings, never as ObjectId in a non-``_id`` field;
- timestamps are epoch seconds (floats): a datetime written by ``$set`` reads back as a string
  on the stand-in;
- no compound index includes ``_id``;
- an update's filter never uses ``$ne`` on a field that may be missing (the stand-in's updates
  match nothing then; ``$exists`` works);
- an array's element is matched through ``$in``, not equality (the stand-in matches it only so);
- a write's filter (update, delete, upsert) that has ``$or`` puts it and every other condition
  under one ``$and``: beside other top-level fields, the stand-in's writes match by the ``$or``
  alone (a delete with ``{"_id": X, "$or": [...]}`` removes whichever document the ``$or`` matches
  first; finds are not affected). Real MongoDB reads both shapes alike, and an upsert takes its
  ``_id`` from an equality inside a top-level ``$and``.
- a range of ``_id`` read in order (listings, a key's versions) goes through ``id_range``: index
  bounds (``min``/``max`` with a ``hint`` on ``_id``) and no ``$gt``/``$gte``/``$lt`` on ``_id`` in
  the filter. The stand-in (nx-27017 0.8.1 on neosqlite 1.17) never turns a comparison on ``_id``
  into SQL: it reads the whole collection, filters and sorts it in Python and only then applies the
  limit (0.7 s at 100,000 documents, whatever the range and the limit); ``min``/``max`` it turns
  into ``WHERE _id >= ? AND _id < ? ORDER BY _id LIMIT n`` on its unique index of ``_id``, an index
  seek (about 10 ms for 1,001 documents). On real MongoDB both shapes are the same bounded scan of
  the ``_id`` index.

Collections (and the repository that owns each): ``files`` and ``manifests`` (``files``),
``chunks`` (``chunks``), ``buckets``, ``objects``, ``uploads`` and ``parts`` (``namespace``),
``api_keys`` and ``s3_credentials`` (``access``), ``events``, ``history``, ``samples``, ``usage``
and ``nodes`` (``operations``).
"""
from __future__ import annotations

import pymongo
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError


def connect_client(url: str, timeout_ms: int = 3000, write_concern: str = "majority") -> pymongo.MongoClient:
    """``write_concern`` (``MINIS3_MONGO_WRITE_CONCERN``): ``majority`` so that a write that
    acknowledges an upload survives a replica-set failover; a number of members also works."""
    w: str | int = int(write_concern) if write_concern.isdigit() else write_concern
    return pymongo.MongoClient(
        url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
        socketTimeoutMS=60_000, retryWrites=True, tz_aware=False, connect=False, w=w,
    )


def ensure_indexes(db: Database) -> None:
    """Every index of the store, created idempotently at start-up."""
    files, manifests, chunks = db["files"], db["manifests"], db["chunks"]
    files.create_index([("tenant", 1), ("created", -1)])
    files.create_index([("tenant", 1), ("sha256", 1)])
    files.create_index([("status", 1), ("updated", 1)])
    files.create_index("manifest.hashes")  # a short manifest kept in its file's document
    manifests.create_index([("file", 1), ("page", 1)])
    manifests.create_index([("file", 1), ("first", 1)])
    manifests.create_index([("file", 1), ("offset", 1)])
    manifests.create_index("hashes")
    chunks.create_index([("state", 1), ("lastRef", 1)])
    chunks.create_index("frags.node")
    chunks.create_index("needsHeal", sparse=True)
    db["api_keys"].create_index("hash", unique=True)
    db["buckets"].create_index("tenant")
    db["objects"].create_index("file")
    db["uploads"].create_index([("bucket", 1), ("key", 1)])
    db["uploads"].create_index("updated")
    db["parts"].create_index([("upload", 1), ("number", 1)])
    db["parts"].create_index("file")
    files.create_index([("kind", 1), ("created", 1)])
    db["s3_credentials"].create_index([("tenant", 1), ("created", 1)])
    files.create_index([("tenant", 1), ("nameFold", 1)])  # search by name prefix
    files.create_index([("tenant", 1), ("bucket", 1), ("key", 1)])  # search by bucket/key prefix
    db["history"].create_index([("kind", 1), ("at", -1)])
    db["samples"].create_index("at")


def insert_new(collection: Collection, doc: dict) -> bool:
    """Insert ``doc`` unless a document with its ``_id`` exists (DuplicateKeyError, on MongoDB and
    on the stand-in alike); True when this call inserted it."""
    try:
        collection.insert_one(doc)
        return True
    except DuplicateKeyError:
        return False


def id_range(collection: Collection, low: str, high: str, limit: int, low_inclusive: bool = True,
             query: dict | None = None, projection: dict | None = None) -> list[dict]:
    """Documents with ``low <= _id < high`` (``>`` when not ``low_inclusive``) that match ``query``,
    in ``_id`` byte order, at most ``limit`` (> 0).

    The range is given as index bounds: ``min`` (inclusive) and ``max`` (exclusive) on the ``_id``
    index, which real MongoDB requires to be named by ``hint``. An exclusive lower bound is the
    least string after ``low``: ``low + "\\x00"``. Bounds on an index compare across BSON types,
    where ``$gt``/``$lt`` stay within one: every ``_id`` read so is a string. MongoDB rejects
    ``min >= max`` (error 51175), so an empty range is answered here without a query."""
    if not low_inclusive:
        low += "\x00"
    if low >= high:
        return []
    cursor = collection.find(query or {}, projection).hint([("_id", 1)])
    cursor = cursor.min([("_id", low)]).max([("_id", high)]).sort("_id", 1).limit(limit)
    return list(cursor)


def prefix_end(prefix: str) -> str:
    """The least string greater than every string that starts with ``prefix`` (code-point order,
    which is UTF-8 byte order): the prefix with its last character incremented."""
    for i in range(len(prefix) - 1, -1, -1):
        if ord(prefix[i]) < 0x10FFFF:
            nxt = ord(prefix[i]) + 1
            return prefix[:i] + chr(0xE000 if 0xD800 <= nxt <= 0xDFFF else nxt)  # no surrogates in UTF-8
    return "\U0010ffff" * (len(prefix) + 1)

