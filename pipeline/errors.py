"""Domain errors: one flat tree. Each carries a code and a message, never an HTTP status: each
front end maps codes to its own answers from one table (``app/errors.py`` for /api,
``app/s3/errors.py`` for S3). ``retry_after`` is a hint in seconds for errors worth retrying."""
from __future__ import annotations


class StoreError(Exception):
    code = "internal_error"
    retry_after: int | None = None

    def __init__(self, message: str | None = None, **details):
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.details = details


class BadRequest(StoreError):
    """The request is malformed."""
    code = "bad_request"


class InvalidId(BadRequest):
    """The file id is not 24 hexadecimal characters."""
    code = "invalid_id"


class MalformedUpload(BadRequest):
    """The upload body is not a well-formed multipart form with a 'file' field."""
    code = "malformed_upload"


class Unauthorized(StoreError):
    """An API key is required."""
    code = "unauthorized"


class Forbidden(StoreError):
    """This API key may not do that."""
    code = "forbidden"


class NotFound(StoreError):
    """No such file."""
    code = "not_found"


class NotReady(StoreError):
    """The file is not stored yet."""
    code = "not_ready"


class UploadTooLarge(StoreError):
    """The upload is larger than the configured limit."""
    code = "too_large"


class RangeNotSatisfiable(StoreError):
    """The requested range lies outside the file."""
    code = "range_not_satisfiable"


class ServiceUnavailable(StoreError):
    """A backing service is unavailable; try again shortly."""
    code = "service_unavailable"
    retry_after = 5


class InsufficientStorage(StoreError):
    """No space left on the storage device."""
    code = "insufficient_storage"


class ChunkUnavailable(StoreError):
    """A chunk is missing or does not match its hash."""
    code = "chunk_unavailable"

    def __init__(self, chunk_hash: str, node: str | None, reason: str):
        super().__init__(f"chunk {chunk_hash} on {node}: {reason}", chunk=chunk_hash, node=node)
        self.chunk_hash = chunk_hash
        self.node = node
        self.reason = reason


class ChunkBusy(StoreError):
    """A chunk is being deleted by garbage collection; retry the ingest shortly."""
    code = "chunk_busy"
    retry_after = 2


# --- names: buckets, objects and multipart uploads (S3) ----------------------------------------

class NoSuchBucket(NotFound):
    """The bucket does not exist."""
    code = "no_such_bucket"


class NoSuchKey(NotFound):
    """The object does not exist."""
    code = "no_such_key"


class NoSuchVersion(NotFound):
    """The version of the object does not exist."""
    code = "no_such_version"


class InvalidVersionId(BadRequest):
    """The version id is not one this store makes."""
    code = "invalid_version_id"


class DeleteMarkerFound(NotFound):
    """The key's latest version (or the version asked for) is a delete marker: not found, with
    the marker's headers (S3 answers 405 to a marker asked for by its id)."""
    code = "delete_marker_found"


class IllegalVersioningState(BadRequest):
    """A versioning configuration this bucket cannot take."""
    code = "illegal_versioning_state"


class NoSuchUpload(NotFound):
    """The multipart upload does not exist: it may have been aborted or completed."""
    code = "no_such_upload"


class BucketExists(StoreError):
    """The bucket name is taken by another account; bucket names are global."""
    code = "bucket_exists"


class BucketNotEmpty(StoreError):
    """The bucket is not empty."""
    code = "bucket_not_empty"


class InvalidPart(BadRequest):
    """A part named in the completion was not uploaded, or its ETag does not match."""
    code = "invalid_part"


class InvalidPartOrder(BadRequest):
    """The parts of a completion must be listed in ascending part-number order."""
    code = "invalid_part_order"


class EntityTooSmall(BadRequest):
    """Every part but the last must be at least 5 MiB."""
    code = "entity_too_small"


class PreconditionFailed(StoreError):
    """A precondition of the request does not hold."""
    code = "precondition_failed"


class NotEnoughFragments(StoreError):
    """Fewer fragments of an erasure-coded chunk are readable than it takes to rebuild it."""
    code = "not_enough_fragments"
    retry_after = 5


class InvalidBucketName(BadRequest):
    """The bucket name is not valid: 3-63 lowercase letters, digits, dots and hyphens."""
    code = "invalid_bucket_name"


class KeyTooLong(BadRequest):
    """The object key is longer than 1024 bytes of UTF-8."""
    code = "key_too_long"


class InvalidKey(BadRequest):
    """The object key is not 1 to 1024 bytes of UTF-8."""
    code = "invalid_key"


class ServerSecretError(StoreError):
    """Stored S3 secrets cannot be read with this server's MINIS3_SECRET_KEY."""
    code = "server_secret"


class NodeUnavailable(StoreError):
    """A storage node is down (its directory is missing or unreadable)."""
    code = "node_unavailable"
    retry_after = 5


class NodesUnavailable(StoreError):
    """Too few storage nodes are up to store a chunk in its layout; ingest retries later."""
    code = "nodes_unavailable"
    retry_after = 5


# --- object lock (WORM) ------------------------------------------------------------------------

class ObjectLocked(Forbidden):
    """The object version is under a legal hold or an unexpired retention period."""
    code = "object_locked"


class InvalidBucketState(StoreError):
    """The request is not valid in the bucket's current state (object lock and versioning)."""
    code = "invalid_bucket_state"


class ObjectLockNotEnabled(BadRequest):
    """The bucket has no object lock configuration."""
    code = "object_lock_not_enabled"


class NoObjectLockConfiguration(NotFound):
    """The object version has no retention (or no legal hold)."""
    code = "no_object_lock_configuration"


class ObjectLockConfigurationNotFound(NotFound):
    """The bucket has no object lock configuration."""
    code = "object_lock_configuration_not_found"
