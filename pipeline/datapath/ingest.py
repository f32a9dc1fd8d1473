"""Ingest: move a spooled upload's chunks onto nodes, deduplicated, then mark the file stored.

Idempotent and crash-safe: every step can run again. Write order: chunk bytes durable on a
node, then the chunk document says ``stored``, then the file says ``stored``, then the spool
directory goes. A chunk that any worker has claimed names its layout (the node of each fragment),
and every worker that holds its bytes writes them to those paths, so concurrent uploads of one
content leave one copy. Chunk bytes are read and written only through ``pipeline.storage.chunkio``.

A new chunk takes the layout of ``MINIS3_EC``: ``k+m`` fragments on ``k+m`` distinct nodes, the
first taken round-robin from the shared counter. Nodes that are down, full or draining are
skipped; a chunk with at least ``k`` fragments durable (on ``k`` distinct nodes) is stored and its
missing fragments are left to heal (``on_degraded``). One stored with no fragment to spare (fewer
than ``k+1``) also keeps its spooled copy, hard-linked under its hash (``Spool.hold``), until heal
has restored every fragment: the upload's acknowledgement promised a durable copy, and ``k``
fragments on ``k`` disks alone survive no further loss. With fewer than ``k`` fragments
written, ingest stops with ``NodesUnavailable`` and the task retries later (the file stays in the
queue and its spool keeps every byte).
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipeline.datapath.pools import process_pool
from pipeline.errors import ChunkBusy, InsufficientStorage, NodesUnavailable
from pipeline.storage.chunkio import ChunkIO, fragments, layout, nodes_of
from pipeline.storage.chunkstore import Spool, SyncBatch, fsync_dir
from pipeline.metadata.model import (CHUNK_DELETING, CHUNK_STORED, CHUNK_WRITING, DELETED, FAILED, STORED,
                                     FileDoc, ManifestPage)
from pipeline.metadata.repositories import Metadata
from pipeline.storage.placement import RoundRobinPlacement

log = logging.getLogger(__name__)


NODE_FULL = f"{InsufficientStorage.code}: no space left on a storage node"  # a failed file's error text


@dataclass
class IngestReport:
    file_id: str
    status: str
    chunks: int = 0
    new_chunks: int = 0
    deduplicated: int = 0
    bytes_written: int = 0
    missing: list[str] = field(default_factory=list)
    degraded: int = 0  # chunks stored with fragments missing (queued for heal)
    seconds: float = 0.0


class SpoolLost(Exception):
    """Chunks that neither the spool nor any node holds."""

    def __init__(self, missing: list[str], unplaced_claims: list[str]):
        super().__init__(f"{len(missing)} chunk(s) lost before ingest")
        self.missing = missing
        self.unplaced_claims = unplaced_claims  # chunk documents this ingest claimed and never wrote


class Ingestor:
    def __init__(self, meta: Metadata, chunkio: ChunkIO, spool: Spool,
                 placement: RoundRobinPlacement, usable_nodes: Callable[[], set[str]] | None = None,
                 on_degraded: Callable[[str], None] | None = None):
        self.meta = meta
        self.chunkio = chunkio
        self.spool = spool
        self.placement = placement
        # nodes new fragments may go to (up, not full, not draining); every node when not given
        self.usable_nodes = usable_nodes or (lambda: set(placement.node_ids))
        self.on_degraded = on_degraded  # chunk hash -> queue its heal

    def ingest(self, file_id: str) -> IngestReport:
        started = time.monotonic()
        doc = self.meta.files.start_processing(file_id)
        if doc is None:  # missing, stored, failed or deleted: a status never goes back to queued
            final = self.meta.files.get_file(file_id)
            if final is None or final.status != FAILED:
                self.spool.remove(file_id)
            return IngestReport(file_id, final.status if final else "missing")
        report = IngestReport(file_id, doc.status, chunks=doc.chunk_count)
        done = 0
        try:
            for page in self.meta.files.manifest_pages(doc.id, doc.chunk_count, doc.first_page):
                self._ingest_page(doc, page.sized(doc.chunk_size, doc.size), report)
                done = page.end_index
                if done < doc.chunk_count:  # mark_stored sets the last page's progress
                    self.meta.files.set_progress(file_id, done)
        except SpoolLost as exc:
            current = self.meta.files.get_file(file_id)
            if current is None or current.status == DELETED:  # deleted meanwhile: its spool went with it
                self.meta.chunks.drop_writing_claims(exc.unplaced_claims)
                report.status = DELETED
                log.info("ingest %s stopped: the file was deleted during ingest", file_id)
                return report
            if current.status == STORED:  # a twin ingest of this file finished it and took its spool
                report.status = STORED
                return report
            report.missing = exc.missing
            self.meta.files.mark_failed(file_id, f"{len(exc.missing)} chunk(s) lost before ingest", exc.missing,
                                  stored_too=False)
            report.status = FAILED
            log.error("ingest %s failed: chunks lost %s", file_id, exc.missing[:10])
            return report
        except InsufficientStorage as exc:  # a node is full: fail visibly, keep no partial upload
            self.meta.files.mark_failed(file_id, NODE_FULL, stored_too=False, code=exc.code)
            self.spool.remove(file_id)
            report.status = FAILED
            log.error("ingest %s failed: %s", file_id, exc.message)
            return report
        if done != doc.chunk_count:
            msg = f"manifest lists {done} of {doc.chunk_count} chunks"
            self.meta.files.mark_failed(file_id, msg, stored_too=False)
            report.status = FAILED
            log.error("ingest %s failed: %s", file_id, msg)
            return report
        if self.meta.files.mark_stored(file_id, doc.chunk_count):
            report.status = STORED
        else:
            current = self.meta.files.get_file(file_id)
            report.status = current.status if current else "missing"
        self.spool.remove(file_id)
        report.seconds = time.monotonic() - started
        return report

    def ingest_many(self, file_ids: list[str]) -> tuple[dict[str, IngestReport], list[str]]:
        """Ingest several files together, most of them small (one manifest page each), with one
        query per step for all of them rather than one per file: their documents, the transition
        to stored, the manifests, the chunk documents, the claims.

        Returns the reports of the files it stored and, in order, the ids it leaves to ``ingest``
        one at a time: files of several pages or none, files not queued, and every file of the
        batch when it meets anything but the common case (a chunk being collected, a spooled
        chunk gone, too few nodes); ``ingest`` deals with each of those as it always has. What
        the batch placed before it stopped is found placed by those ingests, as after a crash.
        """
        started = time.monotonic()
        ids = list(dict.fromkeys(file_ids))
        docs = self.meta.files.queued_many(ids)
        pages = self.meta.files.first_manifest_pages(docs[i] for i in ids if i in docs)
        together = [docs[i] for i in ids if i in pages and 0 < docs[i].chunk_count <= pages[i].end_index]
        if not together:
            return {}, ids
        reports = {f.id: IngestReport(f.id, f.status, chunks=f.chunk_count) for f in together}
        entries = [(f.id, index, h, xxh3, size) for f in together
                   for index, _, h, xxh3, size in pages[f.id].sized(f.chunk_size, f.size).entries()]
        try:
            self._ingest_entries(entries, reports)
        except SpoolLost as exc:
            self.meta.chunks.drop_writing_claims(exc.unplaced_claims)
            return {}, ids
        except (ChunkBusy, NodesUnavailable, InsufficientStorage):
            return {}, ids
        # a chunk that several files of the batch name is new in the first one's report and
        # deduplicated in the others'
        first_file: dict[str, str] = {}
        counted: set[tuple[str, str]] = set()
        for file_id, _, h, _, _ in entries:
            if first_file.setdefault(h, file_id) != file_id and (file_id, h) not in counted:
                counted.add((file_id, h))
                reports[file_id].deduplicated += 1
        stored = self.meta.files.mark_stored_many({f.id: f.chunk_count for f in together})
        seconds = time.monotonic() - started
        done = {}
        for f in together:
            if f.id in stored:
                self.spool.remove(f.id, small=True)
                done[f.id] = reports[f.id]
                done[f.id].status, done[f.id].seconds = STORED, seconds
        return done, [i for i in ids if i not in done]

    def _spooled(self, file_id: str, index: int):
        path = self.spool.chunk_path(file_id, index)
        return path if path.exists() else None

    def _source(self, file_id: str, index: int, d: dict) -> tuple[bool, Path | None]:
        """(already placed, spooled copy). The layout is looked at again after the spool: a twin
        ingest of this file (a re-queue) may move the spooled copy there between two looks."""
        if self.chunkio.is_placed(d):
            return True, None
        src = self._spooled(file_id, index)
        if src is None and self.chunkio.is_placed(d):
            return True, None
        return False, src

    def _ingest_page(self, doc: FileDoc, page: ManifestPage, report: IngestReport) -> None:
        self._ingest_entries([(doc.id, index, h, xxh3, size) for index, _, h, xxh3, size in page.entries()],
                             {doc.id: report})

    def _ingest_entries(self, entries: list[tuple[str, int, str, str, int]],
                        reports: dict[str, IngestReport]) -> None:
        """Place the chunks of manifest entries ``(file id, index, sha256, xxh3, size)``: one page of a
        file, or the pages of several small files. Each distinct chunk counts in the report of the
        first file that names it."""
        # first spooled copy (file id, index) of each distinct hash, and its fast checksum
        first_at: dict[str, tuple[str, int]] = {}
        xxh_of: dict[str, str] = {}
        size_of: dict[str, int] = {}
        for file_id, index, h, xxh3, size in entries:
            if h not in first_at:
                first_at[h] = (file_id, index)
                xxh_of[h] = xxh3
                size_of[h] = size

        def report(h: str) -> IngestReport:
            return reports[first_at[h][0]]
        existing = self.meta.chunks.chunk_docs(first_at)

        busy = [h for h, d in existing.items() if d["state"] == CHUNK_DELETING]
        if busy:
            raise ChunkBusy(f"chunk {busy[0]} is being garbage-collected")

        stored = [h for h, d in existing.items() if d["state"] == CHUNK_STORED]
        heal_after: list[str] = []
        # What keeps these from GC is our manifest, written before this file was queued: GC looks
        # for manifests again after its compare-and-set (pipeline.maintenance.garbage). The touch only
        # refreshes stale stamps and checks that GC holds none of them right now.
        if stored and self.meta.chunks.touch_chunks(stored) != len(stored):
            raise ChunkBusy("a chunk changed state during ingest")  # GC took one between our reads
        to_write: dict[str, dict] = {h: d for h, d in existing.items() if d["state"] == CHUNK_WRITING}
        missing = []
        claimed_here: set[str] = set()
        # a stored chunk whose file vanished is rewritten from the spool when we still hold it
        for h in stored:
            d = existing[h]
            on_node, src = self._source(*first_at[h], d)
            if on_node:
                report(h).deduplicated += 1
            elif layout(d) != (1, 0) and self.chunkio.is_readable(d):
                report(h).deduplicated += 1  # readable from its other fragments: heal completes it
                heal_after.append(h)
            elif src is None:
                log.error("chunk %s missing on node(s) %s and not in spool", h, nodes_of(d))
                missing.append(h)
            else:
                log.warning("chunk %s missing on node(s) %s: rewriting from spool", h, nodes_of(d))
                to_write[h] = d

        new = [h for h in first_at if h not in existing]
        if new:
            k, m = self.chunkio.ec
            usable = self.usable_nodes()
            if len(usable) < k:
                raise NodesUnavailable(f"a {k}+{m} chunk needs {k} writable node(s); "
                                       f"{len(usable)} of {len(self.placement.node_ids)} are up, not full and "
                                       f"not draining", writable=sorted(usable))
            stripes = self.placement.next_stripes(len(new), k + m, usable)
            claims = [self.chunkio.new_document(h, size_of[h], xxh_of[h], stripe)
                      for h, stripe in zip(new, stripes)]
            won = self.meta.chunks.claim_chunks(claims)
            claimed_here = won
            for c in claims:
                if c["_id"] in won:
                    to_write[c["_id"]] = c
            lost_race = [h for h in new if h not in won]
            if lost_race:
                found = self.meta.chunks.chunk_docs(lost_race)
                for h in lost_race:
                    d = found.get(h)
                    if d is None or d["state"] == CHUNK_DELETING:  # GC took it since our claim
                        raise ChunkBusy(f"chunk {h} is being garbage-collected")
                    to_write[h] = d  # another upload holds the claim; our bytes are the same

        dirs = set()
        written = []
        layouts: dict[str, dict] = {}  # fragments written by this ingest, for the documents
        short: dict[str, dict[int, str]] = {}
        hold: list[str] = []  # stored with no fragment to spare: their spooled copy stays

        def place(item: tuple[str, dict]):
            h, d = item
            on_node, src = self._source(*first_at[h], d)
            if on_node:
                if batch is not None:
                    self.chunkio.watch(d, batch)
                return "placed", None
            if src is None:
                return "missing", None
            try:
                return "written", self.chunkio.place_from_spool(d, src, batch)
            except FileNotFoundError:  # another ingest of this file (a re-queue) moved it first
                if not self.chunkio.is_placed(d):
                    raise ChunkBusy(f"chunk {h} is being placed by another ingest") from None
                return "placed", None

        # Erasure-coded chunks are encoded and written by several threads at once. Every chunk
        # written here (a page of one file, or a batch of small files) is then made durable at once,
        # by one syncfs per filesystem, rather than by an fsync of each fragment and of each
        # directory it was named in (six journal commits a 2+1 chunk); fsyncs where there is no syncfs.
        batch = SyncBatch() if SyncBatch.available else None
        try:
            coded = any(layout(d) != (1, 0) for d in to_write.values())
            # threads pay off while encoding and writing release the GIL for long; for small chunks
            # their hand-offs cost more than the work (a futex storm: 300 a 4 KiB file)
            threaded = coded and len(to_write) > 1 and sum(d["size"] for d in to_write.values()) >= THREADED_BYTES
            outcomes = _placer().map(place, to_write.items()) if threaded else map(place, to_write.items())
            for (h, d), (outcome, placed) in zip(to_write.items(), outcomes):
                if outcome == "placed":
                    written.append(h)
                    continue
                if outcome == "missing":
                    missing.append(h)
                    continue
                dirs |= placed.dirs
                k, m = layout(d)
                if len(placed.frags) < k:
                    short[h] = placed.failed
                    continue
                if self.chunkio.needs_hold(d, len(placed.frags)):
                    hold.append(h)
                written.append(h)
                if (k, m) != (1, 0):
                    degraded = len(placed.frags) < k + m
                    if d.get("state", CHUNK_WRITING) == CHUNK_WRITING:
                        layouts[h] = {"frags": placed.frags, "needsHeal": degraded}
                    if degraded or len(fragments(d)) < k + m:
                        heal_after.append(h)
                report(h).new_chunks += 1
                report(h).bytes_written += d["size"]
            if hold and not short:  # the held copies are durable before the chunks say stored
                if batch is not None:
                    batch.watch(self.spool.root)
                dirs |= {self.spool.hold(*first_at[h], h) for h in hold}
                dirs.add(self.spool.held_root)
            if batch is not None:
                batch.commit()
            elif threaded and len(dirs) > 1:  # one directory per fragment: their fsyncs overlap too
                list(_placer().map(fsync_dir, dirs))
            else:
                for d in dirs:
                    fsync_dir(d)
        finally:
            if batch is not None:
                batch.close()
        if short:
            h, failed = next(iter(short.items()))
            raise NodesUnavailable(f"{len(short)} chunk(s) could not be written to enough nodes; chunk {h}: "
                                   + "; ".join(failed.values()), chunks=len(short))
        # GC may have taken a chunk between our read and our write: then it is not stored. When
        # every one was still writing, this update made them all stored and there is nothing to read.
        if self.meta.chunks.mark_chunks_stored(written, layouts) != len(written):
            after = self.meta.chunks.chunk_docs(written)
            unstored = [h for h in written if after.get(h, {}).get("state") != CHUNK_STORED]
            if unstored:
                raise ChunkBusy(f"chunk {unstored[0]} changed state during ingest")
        for h in heal_after:
            report(h).degraded += 1
        if self.on_degraded is not None:
            for h in heal_after:
                self.on_degraded(h)
        if missing:
            raise SpoolLost(missing, [h for h in missing if h in claimed_here])


PLACE_THREADS = 8
THREADED_BYTES = 4 << 20  # chunks placed by several threads at once when they hold this much in all


def _placer() -> ThreadPoolExecutor:
    """This process's pool of placement threads."""
    return process_pool("minis3-place", PLACE_THREADS)
