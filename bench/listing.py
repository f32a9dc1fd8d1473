#!/usr/bin/env python3
"""Time per 1,000-key listing page over 100,000 keys: does a page cost the same wherever it lies?

Starts a private S3 front end (gunicorn) over its own nx-27017 and Redis, names 100,000 keys in
1,000 "directories" (all pointing at one stored file, through ``ObjectNames.bind_many``), then walks
ListObjectsV2 with boto3 (1,000 keys a page) and prints the time of pages 1, 10, 50 and 100, their
ratio to page 1, and the time of a top-level page with a delimiter (1,000 common prefixes, 100 keys
behind each) from the start, and of 100 common prefixes after the first 10, 500 and 900 directories.
``--dirs N`` names N x 100 keys instead (the time of one page against the size of the bucket).

    .venv/bin/python bench/listing.py [--dirs 1000]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.namespace.objects import ObjectAttributes  # noqa: E402
from pipeline.store import ObjectStore  # noqa: E402
from tests.s3clients import boto3_client  # noqa: E402
from tests.stack import Backends, Stack  # noqa: E402

PER_DIR = 100
MARKS = (1, 10, 50, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dirs", type=int, default=1000, help="directories of 100 keys each")
    DIRS = parser.parse_args().dirs
    work = Path(tempfile.mkdtemp(prefix="minis3-listing-"))
    backends = Backends(work / "backends")
    stack = Stack(work / "stack", backends, web=False, worker=False, s3=True)
    try:
        s3 = boto3_client(stack, stack.s3_credentials("bench"), read_timeout=900,
                          retries={"max_attempts": 1, "mode": "standard"})
        s3.create_bucket(Bucket="listing")
        s3.put_object(Bucket="listing", Key="~seed", Body=b"seed")
        store = ObjectStore.from_settings(stack.settings)
        names = store.object_names()
        info = names.head("bench", "listing", "~seed")
        started = time.perf_counter()
        names.bind_many(names.file_of(info), "listing",
                        (f"d{d:03d}/k{k:03d}" for d in range(DIRS) for k in range(PER_DIR)),
                        info.etag, ObjectAttributes(info.content_type))
        print(f"named {DIRS * PER_DIR:,} keys in {time.perf_counter() - started:.1f} s")
        times, args = [], {"Bucket": "listing", "MaxKeys": 1000}
        while True:
            t0 = time.perf_counter()
            page = s3.list_objects_v2(**args)
            times.append(time.perf_counter() - t0)
            if not page["IsTruncated"]:
                break
            args["ContinuationToken"] = page["NextContinuationToken"]
        ordered = sorted(times)
        print(f"{len(times)} pages of up to 1,000 keys: median {ordered[len(ordered) // 2] * 1000:.1f} ms, "
              f"slowest {ordered[-1] * 1000:.1f} ms")
        for n in MARKS:
            if n <= len(times):
                print(f"page {n:>3}: {times[n - 1] * 1000:7.1f} ms  ({times[n - 1] / times[0]:.2f}x page 1)")
        t0 = time.perf_counter()
        top = s3.list_objects_v2(Bucket="listing", Delimiter="/", MaxKeys=1000)
        print(f"top level with '/': {len(top.get('CommonPrefixes', []))} common prefixes in "
              f"{(time.perf_counter() - t0) * 1000:.1f} ms")
        for d in (10, 500, 900):
            if d + 100 <= DIRS:
                t0 = time.perf_counter()
                page = s3.list_objects_v2(Bucket="listing", Delimiter="/", MaxKeys=100, StartAfter=f"d{d - 1:03d}/")
                print(f"with '/' after {d} directories: {len(page.get('CommonPrefixes', []))} common prefixes in "
                      f"{(time.perf_counter() - t0) * 1000:.1f} ms")
        store.meta.client.close()
    finally:
        stack.stop()
        backends.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
