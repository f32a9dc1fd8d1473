"""The domain types of the metadata: a file's states, its document (``FileDoc``) and its manifest
pages (``ManifestPage``), and the states of a chunk document. No query lives here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from bson import ObjectId
from bson.errors import InvalidId as BsonInvalidId

from pipeline.errors import InvalidId
from pipeline.timefmt import iso8601

QUEUED, PROCESSING, STORED, FAILED, DELETED = "queued", "processing", "stored", "failed", "deleted"
LIVE_STATES = (QUEUED, PROCESSING, STORED)
CHUNK_WRITING, CHUNK_STORED, CHUNK_DELETING = "writing", "stored", "deleting"
KIND_FILE, KIND_PART = "file", "part"  # a part of a multipart upload is a file no listing shows
LISTED_STATES = (QUEUED, PROCESSING, STORED, FAILED)


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
    # the manifest, when the document holds it (one short page: pipeline.metadata.files)
    first_page: "ManifestPage | None" = field(default=None, repr=False, compare=False)

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
            first_page=ManifestPage.from_mongo(doc["manifest"]) if doc.get("manifest") else None,
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
