"""S3 credentials: an access key id and a secret per tenant, the secret encrypted at rest.

SigV4 needs the secret itself on the server (it is an HMAC key), so it cannot be stored as a
hash like an API key. It is sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the
server secret ``MINIS3_SECRET_KEY``; the access key id and tenant are the associated data, so a
sealed secret moved onto another record does not open. A wrong server secret fails to open every
record with ServerSecretError, never with a crash.

Opened credentials are cached per process (``pipeline.cache``): a lookup costs one Redis GET
instead of a MongoDB read and a decryption. A revocation increments the shared generation, after
which no process uses its cached copy. Ids found unknown are remembered too, for
``UNKNOWN_TTL_S``, so that a client repeating an invented id costs no MongoDB read each time; a
new key increments the generation, which forgets them at once.
"""
from __future__ import annotations

import base64
import os
import re
import secrets
import string
import time
from dataclasses import dataclass
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pymongo.errors import DuplicateKeyError

from pipeline.access.keys import valid_tenant
from pipeline.backends import translate_backend_errors
from pipeline.cache import Generation, GenerationCache, Lru
from pipeline.errors import NotFound, ServerSecretError
from pipeline.metadata.repositories import Metadata

ACCESS_KEY_PREFIX = "AKMS"
ACCESS_KEY_ID = re.compile(r"AKMS[A-Z0-9]{16}")
_ID_ALPHABET = string.ascii_uppercase + string.digits
_HKDF_INFO = b"minis3 s3-credentials aes-256-gcm v1"
SCHEME = "aes-256-gcm/hkdf-sha256/v1"
UNKNOWN_TTL_S = 30.0


def is_access_key_id(value: str) -> bool:
    return isinstance(value, str) and ACCESS_KEY_ID.fullmatch(value) is not None


def _new_access_key_id() -> str:
    return ACCESS_KEY_PREFIX + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


def _new_secret() -> str:
    return secrets.token_urlsafe(30)  # 40 characters, 240 bits


@dataclass(frozen=True)
class S3Key:
    access_key_id: str
    tenant: str
    created: float
    revoked: float | None

    @classmethod
    def from_mongo(cls, doc: dict) -> "S3Key":
        return cls(doc["_id"], doc["tenant"], doc["created"], doc.get("revoked"))

    @property
    def active(self) -> bool:
        return self.revoked is None

    def to_json(self) -> dict:
        return {"id": self.access_key_id, "kind": "s3", "tenant": self.tenant, "created": self.created,
                "revoked": self.revoked, "active": self.active}


@translate_backend_errors
class S3Credentials:
    def __init__(self, meta: Metadata, server_secret: str, generation: Generation | None = None):
        """``generation``: the shared counter of cached records (without one nothing is cached, and
        a revocation here cannot reach other processes' caches before they expire)."""
        self.meta = meta
        self._server_secret = server_secret or ""
        self._aead: AESGCM | None = None
        self.generation = generation or Generation(None)
        self._cache = GenerationCache(self.generation)
        self._unknown = Lru(4096)  # id -> (generation, monotonic time) of a lookup that found nothing
        self.unknown_ttl_s = UNKNOWN_TTL_S

    def _cipher(self) -> AESGCM:
        if self._aead is None:
            if not self._server_secret:
                raise ServerSecretError("no server secret is configured (MINIS3_SECRET_KEY): S3 secrets cannot "
                                        "be sealed or opened")
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
                self._server_secret.encode("utf-8"))
            self._aead = AESGCM(key)
        return self._aead

    @staticmethod
    def _associated(access_key_id: str, tenant: str) -> bytes:
        return f"{access_key_id}\0{tenant}".encode("utf-8")

    def create(self, tenant: str) -> tuple[str, str]:
        """A new credential for ``tenant``: (access key id, secret); the secret is never shown again."""
        tenant = valid_tenant(tenant)
        cipher = self._cipher()
        secret = _new_secret()
        for _ in range(5):
            access_key_id = _new_access_key_id()
            nonce = os.urandom(12)
            sealed = cipher.encrypt(nonce, secret.encode("ascii"), self._associated(access_key_id, tenant))
            doc = {"_id": access_key_id, "tenant": tenant, "scheme": SCHEME,
                   "nonce": base64.b64encode(nonce).decode("ascii"),
                   "ciphertext": base64.b64encode(sealed).decode("ascii"),
                   "created": time.time(), "revoked": None}
            try:
                self.meta.access.insert_s3_credential(doc)
                self.generation.bump()  # an id some process remembers as unknown exists now
                return access_key_id, secret
            except DuplicateKeyError:
                continue  # 36^16 ids: a collision is all but impossible, but cheap to survive
        raise RuntimeError("could not allocate a unique access key id")

    def lookup(self, access_key_id: str, before_read: Callable[[], None] | None = None) -> tuple[str, str] | None:
        """(secret, tenant) of an active credential; None when unknown, malformed or revoked.

        ``before_read`` is called when the answer is in no cache, before MongoDB is read (it may
        raise to refuse that read: a client over its budget of failed requests)."""
        if not is_access_key_id(access_key_id):
            return None
        return self._cache.get(access_key_id, lambda: self._read(access_key_id, before_read))

    def _read(self, access_key_id: str, before_read: Callable[[], None] | None) -> tuple[str, str] | None:
        gen = self.generation.current()
        if gen is not None:
            miss = self._unknown.get(access_key_id)
            if miss is not None and miss[0] == gen and time.monotonic() - miss[1] < self.unknown_ttl_s:
                return None
        if before_read is not None:
            before_read()
        found = self._open(access_key_id)
        if found is None and gen is not None:
            self._unknown.put(access_key_id, (gen, time.monotonic()))
        return found

    def _open(self, access_key_id: str) -> tuple[str, str] | None:
        doc = self.meta.access.find_s3_credential(access_key_id)
        if doc is None or doc.get("revoked") is not None:
            return None
        if doc.get("scheme") != SCHEME:
            raise ServerSecretError(f"S3 credential {access_key_id} is sealed with an unknown scheme "
                                    f"{doc.get('scheme')!r}")
        try:
            secret = self._cipher().decrypt(base64.b64decode(doc["nonce"]), base64.b64decode(doc["ciphertext"]),
                                            self._associated(access_key_id, doc["tenant"]))
        except (InvalidTag, ValueError, KeyError):
            raise ServerSecretError(f"S3 credential {access_key_id} cannot be decrypted: MINIS3_SECRET_KEY is "
                                    "not the server secret it was stored under") from None
        return secret.decode("ascii"), doc["tenant"]

    def list(self) -> list[S3Key]:
        """Every credential, without secrets."""
        return [S3Key.from_mongo(d) for d in self.meta.access.list_s3_credentials()]

    def revoke(self, access_key_id: str) -> S3Key:
        """Revoke; idempotent; unknown ids raise NotFound. Every process's cached copy is dropped."""
        if is_access_key_id(access_key_id):
            self.meta.access.revoke_s3_credential(access_key_id, time.time())
            self.generation.bump()
            doc = self.meta.access.find_s3_credential(access_key_id)
            if doc is not None:
                return S3Key.from_mongo(doc)
        raise NotFound(f"no S3 access key {access_key_id!r}")
