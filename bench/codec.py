#!/usr/bin/env python3
"""Erasure codec throughput, single thread, over 1 MiB chunks of random bytes.

    .venv/bin/python bench/codec.py                 # 2+1 and 4+2
    .venv/bin/python bench/codec.py --layout 6+3 --seconds 2

For each layout: encode; decode with every data fragment present (the systematic fast path:
concatenation); decode with one data fragment missing (real Reed-Solomon decoding); reconstruct
of one lost data fragment (what heal does). MB/s counts chunk bytes (10^6 bytes per MB); CPU is
this process's user+system seconds per GiB of chunk bytes. Each operation runs for --seconds,
--repeat times; the fastest repeat counts (the machine is shared).

Each layout runs in a fresh process twice: with glibc's default allocator settings, and with
MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ raised. With the defaults, every encode or decode
maps and faults in fresh pages for liberasurecode's buffers (about 3 MiB per 1 MiB chunk), which
costs far more CPU than the Reed-Solomon arithmetic itself; the second row shows the difference.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.storage.erasure import Codec  # noqa: E402

MB = 1_000_000
MiB = 1 << 20
GiB = 1 << 30


def measure(op, size: int, seconds: float, repeat: int) -> tuple[float, float]:
    """(MB/s, CPU seconds per GiB) of the fastest of ``repeat`` runs of ``op`` for ``seconds`` each."""
    best = None
    for _ in range(repeat):
        n = 0
        cpu0, started = time.process_time(), time.perf_counter()
        while True:
            op()
            n += 1
            wall = time.perf_counter() - started
            if wall >= seconds:
                break
        cpu = time.process_time() - cpu0
        result = (n * size / MB / wall, cpu / (n * size / GiB))
        if best is None or result[0] > best[0]:
            best = result
    return best


# glibc: keep multi-MiB buffers in the heap between calls instead of mmap/munmap each time
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(4 * MiB), "MALLOC_TRIM_THRESHOLD_": str(8 * MiB)}


def layout_rows(k: int, m: int, chunk: int, seconds: float, repeat: int) -> list[dict]:
    data = os.urandom(chunk)
    codec = Codec(k, m)
    fragments = codec.encode(data)
    all_data = {i: fragments[i] for i in range(k)}
    one_missing = {i: f for i, f in enumerate(fragments) if i != 0}
    assert codec.decode(all_data, len(data)) == data
    assert codec.decode(one_missing, len(data)) == data
    ops = [
        ("encode", lambda: codec.encode(data)),
        ("decode, all data fragments", lambda: codec.decode(all_data, len(data))),
        ("decode, one data fragment missing", lambda: codec.decode(one_missing, len(data))),
        ("reconstruct one data fragment", lambda: codec.reconstruct(one_missing, [0])),
    ]
    rows = []
    for name, op in ops:
        mbps, cpu = measure(op, len(data), seconds, repeat)
        rows.append({"layout": f"{k}+{m}", "backend": codec.backend, "operation": name, "mb_s": mbps,
                     "cpu_s_per_gib": cpu})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", action="append", help="k+m (repeatable; default 2+1 and 4+2)")
    parser.add_argument("--chunk", type=int, default=MiB, help="chunk size in bytes (default 1 MiB)")
    parser.add_argument("--seconds", type=float, default=1.0, help="duration of each run (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per operation; the fastest counts")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        k, m = (int(x) for x in args.child.split("+"))
        print(json.dumps(layout_rows(k, m, args.chunk, args.seconds, args.repeat)))
        return 0
    rows = [("layout", "backend", "allocator", "operation", "MB/s", "CPU s/GiB")]
    for layout in args.layout or ["2+1", "4+2"]:
        for allocator, extra in (("glibc default", {}), ("tuned", TUNED_MALLOC)):
            env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            env.update(extra)
            out = subprocess.run([sys.executable, __file__, "--child", layout, "--chunk", str(args.chunk),
                                  "--seconds", str(args.seconds), "--repeat", str(args.repeat)],
                                 env=env, check=True, capture_output=True, text=True).stdout
            for r in json.loads(out):
                rows.append((r["layout"], r["backend"], allocator, r["operation"], f"{r['mb_s']:,.0f}",
                             f"{r['cpu_s_per_gib']:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, row in enumerate(rows):
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    tuned = " ".join(f"{k}={v}" for k, v in TUNED_MALLOC.items())
    print(f"\nchunk {args.chunk} bytes, single thread, fastest of {args.repeat} x {args.seconds}s, each layout "
          f"in a fresh process; tuned = {tuned}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
