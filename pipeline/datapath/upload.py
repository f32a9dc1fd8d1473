"""Receive an upload: stream its bytes to the spool, record its manifest and the file as queued."""
from __future__ import annotations

import logging
import re
import threading
import unicodedata
from typing import Iterable

from bson import ObjectId

from pipeline.datapath.chunking import ChunkingWriter, ChunkRecord, ContentDefinedWriter
from pipeline.errors import UploadTooLarge
from pipeline.metadata.groupcommit import SMALL_UPLOADS
from pipeline.metadata.model import KIND_FILE, FileDoc
from pipeline.metadata.repositories import Metadata
from pipeline.storage.chunkstore import Spool

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")


def media_type(raw: str | None) -> str:
    """The part's declared type when it is a plain ``type/subtype``; otherwise octet-stream."""
    value = (raw or "").split(";", 1)[0].strip().lower()
    return value if _MEDIA_TYPE.match(value) else "application/octet-stream"


def display_name(raw: str | None) -> str:
    """A safe display name: last path segment, no control characters, bounded length.

    It is never used as a path; it only travels back in Content-Disposition and listings.
    """
    name = unicodedata.normalize("NFC", raw or "")
    name = _CONTROL.sub("", name)
    name = re.split(r"[\\/]", name)[-1].strip()
    if name in ("", ".", ".."):
        return "file"
    if len(name) > MAX_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_NAME_CHARS - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_NAME_CHARS]
    return name


class ManifestWriter:
    """Collects chunk records into pages and writes each full page to MongoDB."""

    def __init__(self, meta: Metadata, file_id: str, page_size: int):
        self.meta = meta
        self.file_id = file_id
        self.page_size = page_size
        self.page = 0
        self.first_index = 0
        self.offset = 0
        self.hashes: list[str] = []
        self.xxh3: list[str] = []
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    def add(self, record: ChunkRecord) -> None:
        self.add_entry(record.sha256, record.xxh3, record.size)

    def add_entry(self, sha256: str, xxh3: str, size: int) -> None:
        with self.lock:
            self.hashes.append(sha256)
            self.xxh3.append(xxh3)
            self.sizes.append(size)
            if len(self.hashes) >= self.page_size:
                self.flush()

    def flush(self) -> None:
        page = self.take_page()
        if page is not None:
            self.meta.files.put_manifest_page(page["file"], page["page"], page["first"], page["offset"],
                                              page["hashes"], page["xxh3"], page["sizes"])

    def take_page(self) -> dict | None:
        """The page being filled, for its caller to write (None when it holds no entry)."""
        if not self.hashes:
            return None
        page = self.meta.files.manifest_page_doc(self.file_id, self.page, self.first_index, self.offset,
                                                 self.hashes, self.xxh3, self.sizes)
        self.page += 1
        self.first_index += len(self.hashes)
        self.offset += sum(self.sizes)
        self.hashes, self.xxh3, self.sizes = [], [], []
        return page


class _Limited:
    def __init__(self, pieces: Iterable[bytes], limit: int):
        self.pieces = pieces
        self.limit = limit

    def __iter__(self):
        total = 0
        for piece in self.pieces:
            total += len(piece)
            if self.limit and total > self.limit:
                raise UploadTooLarge(f"upload exceeds {self.limit} bytes")
            yield piece


def receive_upload(meta: Metadata, spool: Spool, chunk_size: int, page_size: int,
                   tenant: str, name: str | None, content_type: str | None,
                   pieces: Iterable[bytes], max_bytes: int = 0, request_id: str | None = None,
                   md5: bool = False, kind: str = KIND_FILE, extra: dict | None = None,
                   chunking: str = "fixed", sha256: bool = True, size_hint: int | None = None) -> FileDoc:
    """Spool every piece, write the manifest, then record the file ``queued``.

    ``md5``: also compute the body's MD5 (an S3 ETag), on its own thread beside the others.
    ``size_hint``: the body's announced length, when known (a body of one chunk is hashed without
    threads). ``sha256``: False skips the whole file's SHA-256 (S3 writes: their content is named by the
    ETag, and a part's digest would serve nothing); the file then records none, as a composed one.
    ``chunking``: ``fixed`` (``chunk_size`` each) or ``fastcdc`` (content-defined; the file
    records it, and its manifest the size of every chunk).
    Any failure (client gone, malformed body, a checksum the pieces verify at their end, disk full,
    metadata store down) removes the spool directory and manifest pages, so nothing of a failed
    upload is left behind.
    """
    # a body of one chunk is counted among the small uploads under way, whose records the group
    # commits of its process expect (pipeline.metadata.groupcommit)
    with SMALL_UPLOADS.counting(size_hint is not None and size_hint <= chunk_size):
        file_id = str(ObjectId())
        directory = spool.create(file_id)
        manifest = ManifestWriter(meta, file_id, page_size)
        writer_class = ContentDefinedWriter if chunking == "fastcdc" else ChunkingWriter
        writer = writer_class(directory, lambda i: spool.chunk_path(file_id, i), chunk_size, manifest.add, md5=md5,
                              sha256=sha256, size_hint=size_hint, waves=spool.waves)
        try:
            for piece in _Limited(pieces, max_bytes):
                writer.write(piece)
            result = writer.finish()
            return meta.files.insert_file(  # the last manifest page is written with the file's document
                ObjectId(file_id), tenant, display_name(name), media_type(content_type),
                result.size, result.sha256, result.chunk_count, chunk_size, request_id,
                md5=result.md5, kind=kind, extra={**(extra or {}), "chunking": chunking},
                last_page=manifest.take_page(),
            )
        except BaseException:
            writer.close()
            spool.remove(file_id)
            try:
                meta.files.delete_manifest(file_id)
            except Exception:  # metadata down: the abandoned-upload sweep removes the pages later
                log.warning("could not remove manifest pages of failed upload %s", file_id)
            raise
