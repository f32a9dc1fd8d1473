#!/usr/bin/env python3
"""What each kind of MongoDB command costs the nx-27017 stand-in, in its own CPU.

Starts a private stand-in exactly as the store does (config.embedded.start_mongo), sends ``--n``
commands of each kind one after the other from one client, and prints the stand-in's CPU (user +
system from /proc) per command. Each row's documents look like the store's (a name, a file record);
a bulk row counts one command carrying 8 documents.

    .venv/bin/python bench/standin_cost.py            # 1,000 of each
    .venv/bin/python bench/standin_cost.py --n 300

Whether the stand-in's asyncio server runs on uvloop is printed first (it uses it when installed).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from pymongo import MongoClient, ReturnDocument

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.embedded import free_port, start_mongo, stop  # noqa: E402
from procgroups import CpuTimes  # noqa: E402


def name_doc(key: str) -> dict:
    return {"_id": key, "file": "6730e6b1c2a4f0a1b2c3d4e5", "size": 4096, "etag": "0" * 32,
            "contentType": "binary/octet-stream", "modified": 1764763200.5}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="commands of each kind (default: 1,000)")
    args = parser.parse_args(argv)
    try:
        import uvloop  # noqa: F401
        print("uvloop: installed (the stand-in runs on it)")
    except ImportError:
        print("uvloop: not installed (the stand-in runs on asyncio's own loop)")
    n, bulk = args.n, 8
    with tempfile.TemporaryDirectory() as var:
        port = free_port()
        proc = start_mongo(Path(var), port)
        try:
            names = MongoClient(port=port).bench.objects
            names.insert_one({"_id": "warm-up"})

            def row(what: str, count: int, call) -> None:
                with CpuTimes({"standin": proc.pid}) as cpu:
                    for i in range(count):
                        call(i)
                print(f"{what:40s} {cpu.seconds['standin'] / count * 1000:6.3f} ms a command")

            upsert = {"upsert": True, "return_document": ReturnDocument.BEFORE}
            row("insert one (a new name)", n, lambda i: names.insert_one(name_doc(f"a/{i}")))
            row("findAndModify upsert, new", n, lambda i: names.find_one_and_update(
                {"_id": f"b/{i}"}, {"$set": {"size": 1}}, **upsert))
            row("findAndModify upsert, existing", n, lambda i: names.find_one_and_update(
                {"_id": f"b/{i}"}, {"$set": {"size": 2}}, **upsert))
            row("update one by _id", n, lambda i: names.update_one({"_id": f"a/{i}"}, {"$set": {"size": 3}}))
            row("find one by _id", n, lambda i: names.find_one({"_id": f"a/{i}"}))
            row(f"insert many ({bulk} documents)", n // bulk, lambda i: names.insert_many(
                [name_doc(f"m/{i}/{j}") for j in range(bulk)]))
            row(f"update many by _id $in ({bulk} documents)", n // bulk, lambda i: names.update_many(
                {"_id": {"$in": [f"m/{i}/{j}" for j in range(bulk)]}}, {"$set": {"size": 4}}))
            row(f"find by _id $in ({bulk} documents)", n // bulk, lambda i: list(names.find(
                {"_id": {"$in": [f"m/{i}/{j}" for j in range(bulk)]}})))
        finally:
            stop(proc)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
