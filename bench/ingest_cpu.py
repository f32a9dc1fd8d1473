#!/usr/bin/env python3
"""CPU of the worker's part of a 2+1 ingest, in-process: user and system seconds per GiB.

What the Celery worker does for each new erasure-coded chunk, and nothing else (no MongoDB, no
Redis, no HTTP): read the spooled chunk, verify its xxh3, encode it into 2+1 fragments, write each
fragment atomically (temporary name, rename) on its node, then one syncfs per filesystem for the
page (``--sync each``: an fsync of every fragment and of its directory, as before); 8 placement threads per manifest page, as ``pipeline.datapath.ingest`` runs them.
The spool is written first (random 1 MiB chunks, synced) and is not counted: the web process
writes it in the store. Before each round the previous round's fragments are removed and the run
waits ``--settle`` seconds, so that their freed memory goes back to the host as it does between
uploads (on this VM, touching memory the host took back is what makes page cache expensive).

CPU is this process's ``getrusage`` (every thread) over the ingest alone; ``--rounds`` rounds,
each printed, then the median. Wall-clock is printed too but means little on a shared machine.

    .venv/bin/python bench/ingest_cpu.py                   # 256 MiB, 3 rounds, under var/
    .venv/bin/python bench/ingest_cpu.py --sync each       # the same with an fsync per fragment
    .venv/bin/python bench/ingest_cpu.py --mib 512 --rounds 5 --dir /path/on/the/disk
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.datapath.ingest import _placer  # noqa: E402
from pipeline.storage.chunkio import ChunkIO  # noqa: E402
from pipeline.storage.chunkstore import ChunkStore, Spool, SyncBatch, fsync_dir  # noqa: E402
from pipeline.storage.layouts import xxh3  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
PAGE = 1000  # chunks per manifest page (MINIS3_MANIFEST_PAGE_SIZE's default)


def make_spool(spool: Spool, file_id: str, count: int, chunk: int) -> list[tuple[int, str, str]]:
    """``count`` random chunks spooled and synced; (index, sha256, xxh3) of each."""
    spool.create(file_id)
    entries = []
    for index in range(count):
        data = os.urandom(chunk)
        path = spool.chunk_path(file_id, index)
        with open(path, "wb") as f:
            f.write(data)
        entries.append((index, hashlib.sha256(data).hexdigest(), xxh3(data)))
    os.sync()
    return entries


def ingest_once(chunkio: ChunkIO, spool: Spool, file_id: str, entries, chunk: int, nodes: list[str],
                sync: str = "batch") -> None:
    """Place every spooled chunk as ingest does: a page at a time, 8 threads, then one syncfs per
    filesystem (``sync="batch"``, what ingest does) or the fsync of each fragment and of each
    directory (``"each"``, what it did before)."""
    k, m = chunkio.ec
    for start in range(0, len(entries), PAGE):
        page = entries[start:start + PAGE]
        docs = [chunkio.new_document(h, chunk, x, [nodes[(i + j) % len(nodes)] for j in range(k + m)])
                for i, h, x in page]
        batch = SyncBatch() if sync == "batch" else None

        def place(item):
            (index, _, _), doc = item
            return chunkio.place_from_spool(doc, spool.chunk_path(file_id, index), batch)

        dirs = set()
        for placed in _placer().map(place, zip(page, docs)):
            if len(placed.frags) < k + m:
                raise RuntimeError(f"fragments not written: {placed.failed}")
            dirs |= placed.dirs
        if batch is not None:
            with batch:
                batch.commit()
        else:
            list(_placer().map(fsync_dir, dirs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256, help="MiB ingested per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ec", default="2+1")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of rest before each round")
    parser.add_argument("--dir", type=Path, default=ROOT / "var" / "ingest-cpu")
    parser.add_argument("--sync", choices=("batch", "each"), default="batch",
                        help="batch: one syncfs per page (ingest today); each: an fsync per fragment and directory")
    parser.add_argument("--json", action="store_true", help="print the rounds as one JSON line too")
    args = parser.parse_args(argv)
    k, m = (int(x) for x in args.ec.split("+"))
    chunk = MiB
    work = args.dir
    shutil.rmtree(work, ignore_errors=True)
    node_dirs = [work / f"node-{i}" for i in range(1, k + m + 1)]
    chunks = ChunkStore(node_dirs)
    chunks.ensure_dirs()
    spool = Spool(work / "spool")
    spool.ensure_dir()
    chunkio = ChunkIO(chunks, spool, (k, m))
    entries = make_spool(spool, "f", args.mib, chunk)
    gib = args.mib * MiB / GiB
    rounds = []
    try:
        for r in range(-1, args.rounds):  # round -1 makes the nodes' directories and is not counted
            for entry in chunks.iter_all():  # the previous round's fragments; the directories stay, as in a store in use
                entry.path.unlink()
            os.sync()
            time.sleep(args.settle)
            before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            ingest_once(chunkio, spool, "f", entries, chunk, chunks.node_ids, args.sync)
            after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - wall
            user, system = (after.ru_utime - before.ru_utime) / gib, (after.ru_stime - before.ru_stime) / gib
            if r < 0:
                continue
            rounds.append({"user": user, "sys": system, "wall": wall / gib})
            print(f"round {r + 1}: {args.ec} {args.sync} {args.mib} MiB: user {user:.2f} + sys {system:.2f} = "
                  f"{user + system:.2f} CPU-s/GiB, wall {wall / gib:.1f} s/GiB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {key: statistics.median(x[key] for x in rounds) for key in ("user", "sys", "wall")}
    print(f"median: user {med['user']:.2f} + sys {med['sys']:.2f} = {med['user'] + med['sys']:.2f} CPU-s/GiB")
    if args.json:
        print(json.dumps({"ec": args.ec, "sync": args.sync, "mib": args.mib, "rounds": rounds, "median": med}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
