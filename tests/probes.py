"""Test probes for bad-input and security tests: raw HTTP over a socket, what a stack left behind,
and a node that has run out of space."""
from __future__ import annotations

import errno
import http.client
import os
import socket
import time
from pathlib import Path

import pytest

from pipeline.access.keys import ApiKeys
from pipeline.metadata.repositories import Metadata
from pipeline.storage import chunkstore
from tests.stack import Backends

ALL_STATES = ("queued", "processing", "stored", "failed", "deleted")


def connect(port: int, timeout: float = 30.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    resp = http.client.HTTPResponse(sock, method="POST")
    resp.begin()
    body = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def exchange(port: int, head: bytes, body: bytes = b"", half_close: bool = True,
             timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes (optionally half-closing the socket), then read the answer."""
    with connect(port, timeout) as sock:
        sock.sendall(head + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_response(sock)


def request_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def multipart(payload: bytes, boundary: str = "probeboundary", filename: str = "f.bin",
              field: str = "file") -> tuple[bytes, bytes, bytes]:
    """(head, payload, tail) of a one-part multipart body."""
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head, payload, f"\r\n--{boundary}--\r\n".encode()


def repo_of(stack) -> Metadata:
    return Metadata.connect(stack.settings.mongo_url, stack.settings.mongo_db)


def file_ids(meta: Metadata) -> set[str]:
    """Every file document, whatever its state."""
    return {f.id for f in meta.files.files_in_states(ALL_STATES, time.time() + 3600, limit=100_000)}


def spool_dirs(stack) -> list[str]:
    root = Path(stack.settings.spool_dir)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def create_key(stack, tenant: str, admin: bool = False) -> str:
    """A new API key in the stack's database, as `minis3 keys create [--admin]` makes it."""
    meta = repo_of(stack)
    try:
        return ApiKeys(meta).create(tenant, admin=admin)[0]
    finally:
        meta.client.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module", name="backends")
def private_backends(tmp_path_factory):
    """A module's own nx-27017 (import it as ``backends``).

    nx-27017 keeps one set of collections for all database names: on the session-wide server an
    API key made here would switch every later open (auto) stack to keys-required, files left by
    this module would show up in other modules' listings and fsck runs, and any test's
    drop_database would wipe this module's stacks.
    """
    b = Backends(tmp_path_factory.mktemp("private-mongo"))
    yield b
    b.stop()


def fill_node(monkeypatch, node_dir) -> None:
    """From now until ``monkeypatch.undo()``, every chunk file renamed into ``node_dir`` finds its
    disk full (ENOSPC)."""
    full = str(node_dir)
    real_rename = os.rename

    def no_space(src, dst, *a, **kw):
        if str(dst).startswith(full):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_rename(src, dst, *a, **kw)

    monkeypatch.setattr(chunkstore.os, "rename", no_space)
