#!/usr/bin/env python3
"""What one small S3 PUT costs the store: MongoDB commands, Redis commands and CPU, per PUT.

Starts the store as bench/small.py does (web, S3 web of 2 processes x 16 threads, worker, a
private Redis, nx-27017), except that every process reaches MongoDB through a counting proxy in
this process: it forwards the wire protocol byte for byte and counts each command sent (OP_MSG)
by name and collection. Redis commands come from ``INFO commandstats`` before and after. Then
``--n`` PUTs of 4 KiB from 8 boto3 clients, and the wait until every one's ingest is logged.

Prints per PUT, to readable (every PUT answered) and to stored (every ingest logged): MongoDB
commands by name and collection, Redis commands by name, CPU ms per process group (bench/procgroups;
"client" includes the proxy, so read the store's groups). Monitoring commands (hello, ping...)
are time-driven, shown apart.

    .venv/bin/python bench/put_cost.py            # 1,000 PUTs
    .venv/bin/python bench/put_cost.py --n 300
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import struct
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402

from run import (ROOT, S3_BUCKET, S3Front, Store, put_small_objects, round_robin,  # noqa: E402
                 settle)
from tests.stack import Backends, Stack  # noqa: E402

OP_MSG = 2013
MONITORING = {"hello", "ismaster", "isMaster", "ping", "buildinfo", "buildInfo", "endSessions",
              "saslStart", "saslContinue", "getLastError"}


def first_element(doc: bytes) -> tuple[str, str | None]:
    """(command name, its string value or None) of a BSON command document: its first element."""
    kind = doc[4]
    end = doc.index(b"\0", 5)
    name = doc[5:end].decode()
    if kind == 0x02:  # a string: the collection
        length = struct.unpack_from("<i", doc, end + 1)[0]
        return name, doc[end + 5:end + 4 + length].decode(errors="replace")
    return name, None


def command_of(message: bytes) -> tuple[str, str | None] | None:
    """(command, collection) of one OP_MSG request; None for another opcode."""
    opcode = struct.unpack_from("<i", message, 12)[0]
    if opcode != OP_MSG:
        return None
    pos = 20  # header (16) and flagBits (4)
    while pos < len(message):
        kind = message[pos]
        if kind == 0:
            length = struct.unpack_from("<i", message, pos + 1)[0]
            return first_element(message[pos + 1:pos + 1 + length])
        size = struct.unpack_from("<i", message, pos + 1)[0]  # kind 1: a document sequence
        pos += 1 + size
    return None


class CountingProxy:
    """A loopback TCP proxy to the MongoDB stand-in that counts the commands clients send."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.counts: Counter[tuple[str, str | None]] = Counter()
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def snapshot(self) -> Counter:
        with self.lock:
            return Counter(self.counts)

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(self.target)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._answers, args=(server, client), daemon=True).start()

    @staticmethod
    def _read(sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            piece = sock.recv(n - len(buf))
            if not piece:
                raise ConnectionError
            buf += piece
        return bytes(buf)

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while True:
                header = self._read(client, 16)
                length = struct.unpack_from("<i", header)[0]
                message = header + self._read(client, length - 16)
                command = command_of(message)
                if command is not None:
                    with self.lock:
                        self.counts[command] += 1
                server.sendall(message)
        except (ConnectionError, OSError):
            pass
        finally:
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @staticmethod
    def _answers(server: socket.socket, client: socket.socket) -> None:
        try:
            while True:
                data = server.recv(65536)
                if not data:
                    break
                client.sendall(data)
        except OSError:
            pass
        finally:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def redis_calls(client: redis.Redis) -> Counter:
    return Counter({name.removeprefix("cmdstat_"): stats["calls"]
                    for name, stats in client.info("commandstats").items()})


def show(title: str, n: int, mongo: Counter, rds: Counter, cpu: dict[str, float]) -> None:
    work = {k: v for k, v in mongo.items() if k[0] not in MONITORING and v}
    monitoring = sum(v for k, v in mongo.items() if k[0] in MONITORING)
    print(f"\n== {title}: per PUT")
    print(f"MongoDB commands: {sum(work.values()) / n:.2f} (+ {monitoring / n:.2f} monitoring)")
    for (name, coll), v in sorted(work.items(), key=lambda kv: -kv[1]):
        print(f"  {v / n:6.2f}  {name} {coll or ''}")
    rds = Counter({k: v for k, v in rds.items() if v > 0 and k not in ("info",)})
    print(f"Redis commands: {sum(rds.values()) / n:.2f}")
    for name, v in rds.most_common():
        print(f"  {v / n:6.2f}  {name}")
    print("CPU ms: " + " ".join(f"{k}={v * 1000 / n:.2f}" for k, v in cpu.items())
          + f"  store total={sum(v for k, v in cpu.items() if k != 'client') * 1000 / n:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="PUTs (default 1,000)")
    parser.add_argument("--size", type=int, default=4096, help="bytes per object (default 4,096)")
    args = parser.parse_args(argv)
    work = ROOT / f"var/put-cost-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    backends = Backends(work / "backends")
    proxy = CountingProxy(backends.mongo_port)
    stack = None
    try:
        stack = Stack(work / "store", backends, web_workers=2, web_threads=16, s3=True,
                      mongo_url=f"mongodb://127.0.0.1:{proxy.port}/")
        store = Store.ready(stack, backends)
        s3 = S3Front(store, work)
        rds = redis.Redis.from_url(stack.settings.redis_url)
        take = round_robin([s3.new_client() for _ in range(8)])
        salt = os.urandom(8)
        put_small_objects(take, S3_BUCKET, 20, args.size, salt + b"warm")  # connections, caches
        settle()
        mongo0, redis0 = proxy.snapshot(), redis_calls(rds)
        with store.cpu() as cpu_stored:
            started = time.perf_counter()
            with store.cpu() as cpu_readable:
                request_ids = put_small_objects(take, S3_BUCKET, args.n, args.size, salt)
                answered = time.perf_counter()
            mongo1, redis1 = proxy.snapshot(), redis_calls(rds)
            stored_at, statuses = store.wait_requests(request_ids)
        mongo2, redis2 = proxy.snapshot(), redis_calls(rds)
        bad = [s for s in statuses.values() if s != "stored"]
        if bad:
            raise RuntimeError(f"{len(bad)} PUTs not stored: {bad[:5]}")
        print(f"{args.n} PUTs of {args.size} B: readable {args.n / (answered - started):.0f}/s, "
              f"stored {args.n / (stored_at - started):.0f}/s (counting proxy in the path)")
        show("to readable", args.n, mongo1 - mongo0, redis1 - redis0, cpu_readable.seconds)
        show("to stored", args.n, mongo2 - mongo0, redis2 - redis0, cpu_stored.seconds)
        s3.close()
    finally:
        if stack is not None:
            stack.stop()
        backends.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
