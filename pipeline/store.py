"""The object store: one facade over metadata, chunk store, spool and placement.

The web app and the workers translate HTTP requests and task calls into calls on this class, and
ask it for the maintenance operations, which it builds from those parts.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Iterator

import redis

from config.settings import Settings
from bson import ObjectId

from pipeline.backends import translate_backend_errors
from pipeline.datapath.ingest import Ingestor, IngestReport
from pipeline.datapath.readback import iter_file
from pipeline.datapath.upload import ManifestWriter, receive_upload
from pipeline.errors import NotFound, NotReady, ObjectLocked, RangeNotSatisfiable, ServiceUnavailable
from pipeline.maintenance.fsck import Fsck
from pipeline.maintenance.garbage import GarbageCollector
from pipeline.maintenance.heal import Healer
from pipeline.maintenance.nodes import NodeOperations
from pipeline.maintenance.scrub import Scrubber
from pipeline.maintenance.stats import Stats
from pipeline.maintenance.usage import Usage
from pipeline.metadata.model import DELETED, KIND_FILE, QUEUED, STORED, FileDoc, parse_file_id
from pipeline.metadata.repositories import Metadata
from pipeline.namespace import retention
from pipeline.namespace.objects import ObjectNames
from pipeline.storage.chunkio import ChunkIO
from pipeline.storage.chunkstore import ChunkStore, Spool
from pipeline.storage.placement import RoundRobinPlacement

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"


@translate_backend_errors
class ObjectStore:
    def __init__(self, settings: Settings, meta: Metadata, redis_client: redis.Redis):
        self.settings = settings
        self.meta = meta
        self.redis = redis_client
        self.chunks = ChunkStore(settings.nodes)
        self.spool = Spool(settings.spool_dir)
        self.placement = RoundRobinPlacement(redis_client, self.chunks.node_ids)
        self.chunkio = ChunkIO(self.chunks, self.spool, settings.ec_layout)
        self.chunkio.on_damage = self.report_damage
        self.chunkio.on_damages = self.report_damages
        # chunk hashes -> queue their heal (the web and the workers send one Celery task)
        self.heal_enqueue: Callable[..., None] | None = None
        self.ingestor = Ingestor(meta, self.chunkio, self.spool, self.placement,
                                 usable_nodes=self.usable_nodes, on_degraded=self.queue_heal)

    @classmethod
    def from_settings(cls, settings: Settings) -> "ObjectStore":
        if not settings.mongo_url or not settings.redis_url:
            raise ValueError("MINIS3_MONGO_URL and MINIS3_REDIS_URL must be set")
        meta = Metadata.connect(settings.mongo_url, settings.mongo_db,
                                          write_concern=settings.mongo_write_concern)
        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=3,
                                      health_check_interval=30)
        return cls(settings, meta, client)

    def prepare(self) -> None:
        """Create directories and indexes; idempotent, run by every process at start."""
        self.meta.ensure_indexes()
        # a node that held data and lost its directory stays down: only an operator puts it back
        lost = [n for n in self.chunks.node_ids if not self.chunks.is_up(n) and self.meta.chunks.node_has_fragments(n)]
        self.chunks.ensure_dirs(keep_down=lost)
        self.spool.ensure_dir()

    # --- writes ------------------------------------------------------------------------

    def receive(self, tenant: str, name: str | None, content_type: str | None,
                pieces: Iterable[bytes], request_id: str | None = None, md5: bool = False,
                kind: str = KIND_FILE, extra: dict | None = None, sha256: bool = True,
                size_hint: int | None = None) -> FileDoc:
        return receive_upload(
            self.meta, self.spool, self.settings.chunk_size, self.settings.manifest_page_size,
            tenant, name, content_type, pieces, self.settings.max_upload_bytes, request_id,
            md5=md5, kind=kind, extra=extra, chunking=self.settings.chunking, sha256=sha256, size_hint=size_hint,
        )

    def compose(self, tenant: str, name: str, content_type: str | None, sources: list[FileDoc],
                sha256: str | None, md5: str | None, kind: str = KIND_FILE, extra: dict | None = None) -> FileDoc:
        """A new file whose manifest is the concatenation of the sources' manifests: no data byte
        is read or written. When every source is stored, so is the new file. Otherwise the chunks
        that sources not yet ingested still hold in the spool are hard-linked into the new file's
        spool (a link moves no byte) and the new file is ``queued``: readable at once, ingested
        once as a whole by the caller's queue. A source whose chunk has left its spool meanwhile
        is ingested here (usually its own ingest has just placed it: then this finds it stored),
        so that the new file's ingest finds that chunk on its node. The new manifest exists before
        the caller releases any source, so every chunk stays referenced."""
        pending = {src.id for src in sources if src.status != STORED}
        unlinked = set()
        file_id = str(ObjectId())
        manifest = ManifestWriter(self.meta, file_id, self.settings.manifest_page_size)
        size = count = 0
        try:
            if pending:
                self.spool.create(file_id)
            # the sources' first pages in one query (all of most parts' manifest), the rest by file
            firsts = self.meta.files.first_manifest_pages(sources)
            for src in sources:
                for page in self.meta.files.manifest_pages(src.id, src.chunk_count, firsts.get(src.id)):
                    for index, _, h, x, n in page.sized(src.chunk_size, src.size).entries():
                        manifest.add_entry(h, x, n)
                        if src.id in pending and not self.spool.link(src.id, index, file_id, count):
                            unlinked.add(src.id)
                        size += n
                        count += 1
            manifest.flush()
            for src in sources:
                if src.id in unlinked:
                    self.ensure_stored(src)
            if pending:
                self.spool.sync(file_id)
            return self.meta.files.insert_file(ObjectId(file_id), tenant, name, content_type or "application/octet-stream",
                                         size, sha256, count, self.settings.chunk_size, md5=md5, kind=kind,
                                         status=QUEUED if pending else STORED, extra=extra)
        except BaseException:
            self.meta.files.release_manifest(file_id)
            self.spool.remove(file_id)
            raise

    def ensure_stored(self, f: FileDoc) -> FileDoc:
        """Ingest a file here and now unless a worker already has (ingest is idempotent)."""
        if f.status == STORED:
            return f
        report = self.ingest(f.id)
        if report.status != STORED:
            current = self.meta.files.get_file(f.id)
            if current is None or current.status != STORED:
                raise ServiceUnavailable(f"file {f.id} could not be ingested ({report.status})")
            return current
        return self.meta.files.get_file(f.id) or f

    def ingest(self, file_id: str) -> IngestReport:
        return self.ingestor.ingest(file_id)

    def ingest_many(self, file_ids: list[str]) -> tuple[dict[str, IngestReport], list[str]]:
        return self.ingestor.ingest_many(file_ids)

    def delete(self, tenant: str, file_id: str) -> None:
        """The file disappears at once; its manifest goes next, so GC may reclaim its chunks once
        the grace period has passed. A crash in between leaves the manifest to the spool sweep."""
        parse_file_id(file_id)
        f = self.meta.files.get_file(file_id, tenant)
        if f is not None and f.bucket is not None:  # the file of an object version object lock protects stays
            now = time.time()
            if any(retention.is_locked(v, now) for v in self.meta.versions.versions_of_file(file_id)):
                raise ObjectLocked("the file is an object version under a legal hold or retention period",
                                   fileId=file_id)
        if f is None or not self.meta.files.mark_deleted(file_id, tenant):
            raise NotFound()
        if f.bucket is not None:  # the S3 name goes with its file
            self.meta.namespace.delete_object_name(f"{f.bucket}/{f.key}", file_id)
        self.meta.files.release_manifest(file_id)
        self.spool.remove(file_id)

    def discard(self, file_id: str) -> None:
        """Delete a file no name points at any more (an overwritten object, a replaced or aborted
        part); idempotent."""
        self.discard_many([file_id])

    def discard_many(self, file_ids: list[str]) -> None:
        """``discard`` of several files (the parts of a completed or aborted multipart upload) with
        a few queries for all of them rather than a few per file."""
        live = [f.id for f in self.meta.files.get_files(file_ids).values() if f.status != DELETED]
        if not live:
            return
        self.meta.files.mark_deleted_many(live)
        self.meta.files.release_manifests(live)
        for file_id in live:
            self.spool.remove(file_id)

    # --- reads -------------------------------------------------------------------------

    def get(self, tenant: str, file_id: str) -> FileDoc:
        f = self.meta.files.get_file(file_id, tenant)
        if f is None or f.status == "deleted":
            raise NotFound()
        return f

    def get_readable(self, tenant: str, file_id: str) -> FileDoc:
        """A file whose upload was acknowledged: stored, or still being ingested (read from the
        spool meanwhile); a failed file is not readable."""
        f = self.get(tenant, file_id)
        if not f.readable:
            raise NotReady(f"file is {f.status}", status=f.status)
        return f

    def get_by_hash(self, tenant: str, sha256: str) -> FileDoc:
        f = self.meta.files.find_stored_by_hash(tenant, sha256.lower())
        if f is None:
            raise NotFound("no stored file has that content hash")
        return f

    def list(self, tenant: str, limit: int, cursor: str | None,
             search: str | None = None) -> tuple[list[FileDoc], str | None]:
        files = self.meta.files.list_files(tenant, limit + 1, cursor, search)
        more = len(files) > limit
        files = files[:limit]
        return files, (files[-1].id if more and files else None)

    def read(self, f: FileDoc, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        if start < 0 or (f.size and start >= f.size):
            raise RangeNotSatisfiable()
        return iter_file(self.meta, self.chunkio, f, start, stop)

    def wait_until_final(self, file_id: str, timeout_s: float) -> FileDoc:
        deadline = time.monotonic() + timeout_s
        delay = 0.02
        while True:
            f = self.meta.files.get_file(file_id)
            if f is None or f.status not in ("queued", "processing") or time.monotonic() > deadline:
                return f
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    # --- nodes and damage ------------------------------------------------------------------

    def node_states(self) -> list[dict]:
        """Each configured node: up, down, full or draining, with its free space."""
        draining = self.meta.operations.draining_nodes()
        out = []
        for n in self.chunks.node_ids:
            status = self.chunks.node_status(n, full_below=self.settings.chunk_size * 2)
            if status["state"] == "up" and n in draining:
                status["state"] = "draining"
            out.append(status)
        return out

    def usable_nodes(self) -> set[str]:
        """Nodes new fragments may go to: up, not full, not draining."""
        return {s["node"] for s in self.node_states() if s["state"] == "up"}

    def queue_heal(self, chunk_hash: str) -> None:
        """Flag a chunk and queue its heal even when it was flagged already (ingest stores a
        chunk missing fragments with the flag set)."""
        self.meta.chunks.flag_heal(chunk_hash)
        if self.heal_enqueue is not None:
            self.heal_enqueue(chunk_hash)

    def report_damage(self, chunk_hash: str) -> None:
        """A read, an ingest or a scrub found a chunk missing fragments: flag it and queue its heal
        (once: while it stays flagged, later reports queue nothing)."""
        if self.meta.chunks.flag_heal(chunk_hash) and self.heal_enqueue is not None:
            self.heal_enqueue(chunk_hash)

    def report_damages(self, hashes: list[str]) -> None:
        """``report_damage`` for many chunks (a read's page): two MongoDB calls and one task."""
        flagged = self.meta.chunks.flag_heal_many(hashes)
        if flagged and self.heal_enqueue is not None:
            self.heal_enqueue(*flagged)

    # --- maintenance: each operation built from the parts it uses ---------------------------------
    # afresh at each call, so that each one sees the store's settings and parts as they are now

    def garbage_collector(self) -> GarbageCollector:
        return GarbageCollector(files=self.meta.files, chunks=self.meta.chunks, operations=self.meta.operations,
                                chunkio=self.chunkio, nodes=self.chunks, spool=self.spool, redis=self.redis,
                                settings=self.settings)

    def healer(self) -> Healer:
        return Healer(chunks=self.meta.chunks, operations=self.meta.operations, chunkio=self.chunkio,
                      spool=self.spool, placement=self.placement, usable_nodes=self.usable_nodes,
                      settings=self.settings)

    def scrubber(self) -> Scrubber:
        return Scrubber(chunks=self.meta.chunks, operations=self.meta.operations, chunkio=self.chunkio,
                        report_damage=self.report_damage, settings=self.settings)

    def fsck(self) -> Fsck:
        return Fsck(files=self.meta.files, chunks=self.meta.chunks, nodes=self.chunks, chunkio=self.chunkio,
                    spool=self.spool, healer=self.healer(), settings=self.settings)

    def node_operations(self) -> NodeOperations:
        return NodeOperations(chunks=self.meta.chunks, operations=self.meta.operations, nodes=self.chunks,
                              chunkio=self.chunkio, healer=self.healer(), node_states=self.node_states,
                              usable_nodes=self.usable_nodes)

    def stats(self) -> Stats:
        return Stats(chunks=self.meta.chunks, operations=self.meta.operations, nodes=self.chunks,
                     scrubber=self.scrubber(), settings=self.settings)

    def usage(self) -> Usage:
        return Usage(files=self.meta.files, operations=self.meta.operations, stats=self.stats(),
                     settings=self.settings)

    # --- the S3 namespace -----------------------------------------------------------------------

    def object_names(self, enqueue: Callable[[FileDoc], None] | None = None) -> ObjectNames:
        """The S3 names over this store's files; ``enqueue(file)`` queues the ingest of a file that a
        completion or a copy composed (without it, that file is ingested in the call)."""
        return ObjectNames(namespace=self.meta.namespace, versions=self.meta.versions, files=self.meta.files,
                           operations=self.meta.operations, redis=self.redis, receive=self.receive,
                           compose=self.compose, read=self.read, discard=self.discard,
                           discard_many=self.discard_many, ensure_stored=self.ensure_stored, enqueue=enqueue)

    # --- operations ----------------------------------------------------------------------

    def health(self) -> dict:
        checks: dict = {}
        try:
            self.redis.ping()
            checks["redis"] = {"ok": True}
        except redis.RedisError as exc:
            checks["redis"] = {"ok": False, "error": exc.__class__.__name__}
        try:
            self.meta.ping()
            checks["mongodb"] = {"ok": True}
        except Exception as exc:  # any driver error means not ready
            checks["mongodb"] = {"ok": False, "error": exc.__class__.__name__}
        try:
            checks["nodes"] = self.node_states()
        except Exception:  # draining states live in MongoDB: without it, the directories alone
            checks["nodes"] = [self.chunks.node_status(n, self.settings.chunk_size * 2)
                               for n in self.chunks.node_ids]
        k, m = self.settings.ec_layout
        writable = [n["node"] for n in checks["nodes"] if n["state"] == "up"]
        need = k
        layout = {"ec": f"{k}+{m}", "writableNodes": len(writable), "ok": len(writable) >= k + m}
        if len(writable) < need:
            layout["reason"] = (f"ingest waits: a {k}+{m} chunk needs {need} writable node(s), "
                                f"{len(writable)} are up; uploads stay queued until nodes come back")
        elif len(writable) < k + m:
            layout["reason"] = (f"new chunks are stored with {len(writable)} of {k + m} fragments and "
                                f"healed once nodes come back" + (" (their spooled copies are kept until then)"
                                                                  if len(writable) < k + 1 else ""))
        checks["layout"] = layout
        try:
            degraded = self.meta.chunks.count_needing_heal()
            checks["chunks"] = {"ok": degraded == 0, "degraded": degraded}
        except Exception:
            pass
        ok = checks["redis"]["ok"] and checks["mongodb"]["ok"] and all(n["ok"] for n in checks["nodes"])
        return {"ok": ok, "host": self.settings.host_id, **checks}
