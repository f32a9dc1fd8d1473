"""The server secret (MINIS3_SECRET_KEY) for one machine: read from ``var/secret.key`` or made once.

Losing this file makes every stored S3 secret unreadable, so it is created exactly once: the
new key is written to a private temporary file and hard-linked into place, and a process that
loses the race reads the winner's key.
"""
from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

FILENAME = "secret.key"


def load_or_create(var_dir: Path) -> str:
    """The key in ``var_dir/secret.key``; created (0600, 32 random bytes, urlsafe base64) if absent."""
    var_dir = Path(var_dir)
    path = var_dir / FILENAME
    existing = _read(path)
    if existing:
        return existing
    var_dir.mkdir(parents=True, exist_ok=True)
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")
    tmp = var_dir / f".{FILENAME}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            if not _read(path):  # an empty file left by a crash before this scheme: replace it
                os.replace(tmp, path)
                return key
            return _read(path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(var_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return key


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None
