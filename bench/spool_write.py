#!/usr/bin/env python3
"""What writing the spool costs the writer: 1 MiB chunk files written through the page cache or
with O_DIRECT, each fdatasynced, then read back (page cache, or from disk); CPU-s per GiB.

The spool writer (pipeline.datapath.chunking) writes each chunk's file with O_DIRECT where the
filesystem takes it: on this project's VM a page-cache page per byte written costs the writing
process ten times the kernel CPU of an O_DIRECT write (pages the host took back fault in again).
This measures the two ways side by side, in rounds, on the disk under ``--dir``.

    .venv/bin/python bench/spool_write.py                # 512 MiB, 2 rounds, under var/
    .venv/bin/python bench/spool_write.py --mib 1024 --rounds 3
"""
from __future__ import annotations

import argparse
import mmap
import os
import shutil
import sys
import time
from pathlib import Path

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


def cpu() -> tuple[float, float]:
    t = os.times()
    return t.user + t.system, t.system


def write(directory: Path, tag: str, n: int, direct: bool, data: bytes, aligned: mmap.mmap) -> None:
    for i in range(n):
        path = directory / f"{tag}{i}"
        if direct:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
            os.write(fd, aligned)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
            os.write(fd, data)
        os.fdatasync(fd)
        os.close(fd)


def read(directory: Path, tag: str, n: int, direct: bool, aligned: mmap.mmap) -> None:
    for i in range(n):
        path = directory / f"{tag}{i}"
        if direct:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            os.readv(fd, [aligned])
        else:
            fd = os.open(path, os.O_RDONLY)
            os.read(fd, MiB)
        os.close(fd)


def timed(label: str, n: int, step) -> None:
    (c0, s0), w0 = cpu(), time.perf_counter()
    step()
    (c1, s1), w1 = cpu(), time.perf_counter()
    per_gib = 1024 / n
    print(f"  {label:<38} {(c1 - c0) * per_gib:5.2f} CPU-s/GiB (system {(s1 - s0) * per_gib:5.2f}), "
          f"{(w1 - w0) * per_gib:5.2f} s/GiB wall", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=512, help="MiB written per way and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of rest before each way")
    parser.add_argument("--dir", type=Path, default=ROOT / "var" / "spool-write")
    args = parser.parse_args(argv)
    if not hasattr(os, "O_DIRECT"):
        print("no O_DIRECT on this platform")
        return 1
    work = args.dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = os.urandom(MiB)
    aligned = mmap.mmap(-1, MiB)
    aligned[:] = data
    n = args.mib
    try:
        for r in range(args.rounds):
            print(f"round {r + 1}: {n} files of 1 MiB each way")
            for direct in (False, True):
                way = "O_DIRECT" if direct else "page cache"
                tag = f"{'d' if direct else 'b'}{r}-"
                time.sleep(args.settle)
                timed(f"write through {way} + fdatasync", n, lambda: write(work, tag, n, direct, data, aligned))
                timed(f"read back ({'from disk' if direct else 'cached'})", n,
                      lambda: read(work, tag, n, direct, aligned))
    finally:
        aligned.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
