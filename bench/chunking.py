#!/usr/bin/env python3
"""Benchmark of chunking: fixed 1 MiB chunks against content-defined ones (FastCDC), in one run.

For MINIS3_CHUNKING=fixed and =fastcdc, each on its own store (real processes): upload a file to
stored with the CPU each process group spent, then a 64 MiB file and the same file with 100 bytes
inserted near its start, and how many of the second file's chunks the store already held. Prints a
table and writes it as JSON under bench/results/ (``chunking-<stamp>.json``).

    .venv/bin/python bench/chunking.py            # 1 GiB
    .venv/bin/python bench/chunking.py --quick    # 64 MiB
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import (MiB, Figure, Store, cpu_per_gib, figure, human, random_file, rate,  # noqa: E402
                       run_table_script, settle)
from tests.stack import Backends, Stack  # noqa: E402

EDITED_SIZE = 64 * MiB
INSERTED = b"0123456789" * 10
TARGET = 0.8  # fastcdc upload to stored >= 0.8x the fixed figure


def edited_copy(src: Path, dst: Path, at: int = 5000) -> None:
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(fin.read(at))
        fout.write(INSERTED)
        shutil.copyfileobj(fin, fout, 1 << 20)


def chunks_known(stack: Stack, file_id: str) -> tuple[int, int]:
    """(chunks of the file's manifest, distinct chunks)."""
    with stack.metadata() as meta:
        hashes = [h for page in meta.files.iter_manifest(file_id) for h in page.hashes]
    return len(hashes), len(set(hashes))


def distinct_chunks(stack: Stack) -> int:
    with stack.metadata() as meta:
        return meta.db.chunks.count_documents({})


def run(size: int, work: Path, log) -> list[Figure]:
    figures: list[Figure] = []
    big, original, edited = work / "big.bin", work / "original.bin", work / "edited.bin"
    random_file(big, size)
    random_file(original, EDITED_SIZE)
    edited_copy(original, edited)
    backends = Backends(work / "backends")
    fixed_rate = None
    try:
        for chunking in ("fixed", "fastcdc"):
            log(f"store with {chunking} chunking")
            stack = Stack(work / f"store-{chunking}", backends, chunking=chunking, web_workers=2, web_threads=16)
            try:
                store = Store(stack, backends)
                settle()
                up = store.upload(big)
                value = rate(size, up.to_stored.seconds)
                figure(figures, f"{chunking}: upload {human(size)} to stored", value, "MB/s",
                       "fixed" if chunking == "fastcdc" else None, fixed_rate if chunking == "fastcdc" else None,
                       f">= {TARGET}x fixed" if chunking == "fastcdc" else None,
                       ratio_min=TARGET if chunking == "fastcdc" else None,
                       cpu=cpu_per_gib(up.to_stored.cpu, size), cpu_unit="s/GiB")
                if chunking == "fixed":
                    fixed_rate = value
                first = store.upload(original, measure=False)
                before = distinct_chunks(stack)
                second = store.upload(edited, measure=False)
                added = distinct_chunks(stack) - before
                total, distinct = chunks_known(stack, second.file_id)
                log(f"{chunking}: the edited copy has {total} chunks, {added} of them new "
                    f"(the original: {chunks_known(stack, first.file_id)[0]})")
                figure(figures, f"{chunking}: 64 MiB with 100 bytes inserted, chunks deduplicated",
                       100.0 * (distinct - added) / distinct, "%",
                       target=">= 90%" if chunking == "fastcdc" else None,
                       value_min=90.0 if chunking == "fastcdc" else None)
            finally:
                stack.stop()
    finally:
        backends.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    return run_table_script("chunking", __doc__, lambda size, work, log, args: run(size, work, log), argv=argv)


if __name__ == "__main__":
    sys.exit(main())
