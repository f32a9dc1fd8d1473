"""API keys: each names one tenant; a key is shown once at creation and stored only as a hash.

A key reads ``ms3_<id>_<secret>``: the id (12 hex) lets an operator match a key to its record
without the secret; the secret is 32 random bytes. Keys carry 256 bits of entropy, so a plain
SHA-256 is enough to store them (nothing to brute-force, unlike a password) and the hash is the
lookup index.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from pipeline.backends import translate_backend_errors
from pipeline.errors import BadRequest, NotFound
from pipeline.metadata.repositories import Metadata
from pipeline.timefmt import iso8601

KEY_PREFIX = "ms3_"
_KEY = re.compile(r"^ms3_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$")
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def valid_tenant(name: str) -> str:
    if not isinstance(name, str) or not _TENANT.match(name):
        raise BadRequest("a tenant name is 1-64 characters: letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant: str
    created: float
    revoked: float | None
    admin: bool = False  # an operator's key: store-wide figures and metrics (app.auth.is_operator)

    @classmethod
    def from_mongo(cls, doc: dict) -> "ApiKey":
        return cls(id=doc["_id"], tenant=doc["tenant"], created=doc["created"], revoked=doc.get("revoked"),
                   admin=doc.get("admin") is True)

    @property
    def active(self) -> bool:
        return self.revoked is None

    def to_json(self) -> dict:
        return {"id": self.id, "tenant": self.tenant, "admin": self.admin, "created": iso8601(self.created),
                "revoked": iso8601(self.revoked), "active": self.active}


@translate_backend_errors
class ApiKeys:
    def __init__(self, meta: Metadata):
        self.meta = meta

    def create(self, tenant: str, admin: bool = False) -> tuple[str, ApiKey]:
        """A new key for ``tenant`` (an operator's with ``admin``): returns the plaintext (the only
        time it exists) and the record."""
        key_id = secrets.token_hex(6)
        plaintext = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        doc = {"_id": key_id, "hash": hash_key(plaintext), "tenant": valid_tenant(tenant),
               "admin": bool(admin), "created": time.time(), "revoked": None}
        self.meta.access.insert_api_key(doc)
        return plaintext, ApiKey.from_mongo(doc)

    def list(self) -> list[ApiKey]:
        return [ApiKey.from_mongo(d) for d in self.meta.access.list_api_keys()]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke by id (or by the whole key); idempotent; unknown ids raise NotFound."""
        if _KEY.match(key_id):
            key_id = key_id[len(KEY_PREFIX):len(KEY_PREFIX) + 12]
        self.meta.access.revoke_api_key(key_id, time.time())
        doc = self.meta.access.get_api_key(key_id)
        if doc is None:
            raise NotFound(f"no API key with id {key_id!r}")
        return ApiKey.from_mongo(doc)

    def authenticate(self, plaintext: str) -> ApiKey | None:
        """The active key this plaintext is, or None (malformed, unknown or revoked)."""
        if not _KEY.match(plaintext):
            return None
        doc = self.meta.access.find_api_key(hash_key(plaintext))
        if doc is None:
            return None
        key = ApiKey.from_mongo(doc)
        return key if key.active else None

    def any_exist(self) -> bool:
        """Whether any key was ever created (revoked ones count: auth stays on once it was on)."""
        return self.meta.access.api_keys_exist()


def open_reason(settings) -> str | None:
    """Why the service may serve without authentication, or None when keys are required.

    Asked before a web server binds (gunicorn's master, the runner), so it needs no web framework:
    one short-lived MongoDB lookup for any API key under ``MINIS3_AUTH=auto``.
    """
    if settings.auth == "required":
        return None
    if settings.auth == "open":
        return "MINIS3_AUTH=open"
    if not settings.mongo_url:
        return "MINIS3_AUTH=auto and no metadata store to look for API keys in"
    meta = Metadata.connect(settings.mongo_url, settings.mongo_db, timeout_ms=5000)
    try:
        if ApiKeys(meta).any_exist():
            return None
        return "MINIS3_AUTH=auto and no API key exists yet"
    except Exception as exc:  # unknown: fail closed
        return f"MINIS3_AUTH=auto and the API keys could not be checked ({exc.__class__.__name__})"
    finally:
        meta.client.close()
