"""Who is calling: an API key (``Authorization: Bearer`` or ``X-API-Key``) names the tenant.

``MINIS3_AUTH``: ``required`` (every API call needs a key), ``open`` (no key needed; tenant
``default``), ``auto`` (open until the first key exists, then required). While the service can
run open it binds to loopback only and says so at start.

Identification runs before the rate limiter (so that limits are per key) but never answers by
itself: a missing or bad key is remembered and raised by ``enforce`` after the limiter, so that
failed attempts count against the caller's address.
"""
from __future__ import annotations

import json
import logging
import sys
import time

from flask import Flask, current_app, g, request

from config.secretkey import load_or_create
from config.settings import Settings
from pipeline.access.credentials import S3Credentials, is_access_key_id
from pipeline.access.keys import ApiKey, ApiKeys
from pipeline.cache import records_generation
from pipeline.errors import StoreError, Unauthorized
from pipeline.metadata.repositories import Metadata
from pipeline.store import DEFAULT_TENANT

log = logging.getLogger(__name__)

PUBLIC_ENDPOINTS = frozenset({"api.health"})
PROTECTED_BLUEPRINTS = frozenset({"api", "metrics"})
# auto mode with no key yet: how long "no key exists" is believed, per process. A lookup on every
# call was a quarter of a small upload's web time; open mode only ever listens on loopback.
KEYS_RECHECK_S = 1.0


def presented_key() -> str | None:
    """The key the client sent, or None; a non-Bearer Authorization header is refused."""
    header = request.headers.get("Authorization")
    if header:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("unsupported Authorization header: send 'Authorization: Bearer <key>'")
        return value.strip()
    value = request.headers.get("X-API-Key", "").strip()
    return value or None


class Authenticator:
    def __init__(self, keys: ApiKeys, mode: str, recheck_s: float = KEYS_RECHECK_S):
        self.keys = keys
        self.mode = mode
        self.recheck_s = recheck_s
        self._keys_exist = False  # once true it stays true: auth never switches back off by itself
        self._next_check = 0.0
        self._warned_open = False

    def keys_required(self) -> bool:
        if self.mode != "auto":
            return self.mode == "required"
        if not self._keys_exist and time.monotonic() >= self._next_check:
            self._keys_exist = self.keys.any_exist()  # MongoDB down: raises (503), asks again next call
            self._next_check = time.monotonic() + self.recheck_s
        return self._keys_exist

    def identify(self) -> ApiKey | None:
        """The caller's key, None when it sent none and none is needed; raises Unauthorized."""
        plaintext = presented_key()
        if plaintext is not None:
            key = self.keys.authenticate(plaintext)
            if key is None:
                raise Unauthorized("invalid or revoked API key")
            return key
        if self.keys_required():
            raise Unauthorized("an API key is required: send 'Authorization: Bearer <key>'")
        if not self._warned_open:
            self._warned_open = True
            log.warning("serving WITHOUT authentication (MINIS3_AUTH=%s, no API key exists): every "
                        "caller acts as tenant %r", self.mode, DEFAULT_TENANT)
        return None


def _authenticator() -> Authenticator:
    return current_app.extensions["minis3.auth"]


def identify() -> None:
    g.api_key = None
    g.auth_failure = None
    g.tenant = DEFAULT_TENANT
    if (request.method == "OPTIONS" or request.routing_exception is not None
            or request.blueprint not in PROTECTED_BLUEPRINTS or request.endpoint in PUBLIC_ENDPOINTS):
        return
    try:
        key = _authenticator().identify()
    except Exception as exc:  # raised by enforce(), after the limiter has counted the attempt
        g.auth_failure = exc
        return
    if key is not None:
        g.api_key = key
        g.tenant = key.tenant


def is_operator() -> bool:
    """May this caller see store-wide views (every tenant's figures, /metrics)? An admin key may;
    so may anyone while the service runs open (loopback only), as every caller could before."""
    key = g.get("api_key")
    if key is not None and key.admin:
        return True
    return not _authenticator().keys_required()


def enforce() -> None:
    if g.get("auth_failure") is not None:
        raise g.auth_failure


def challenge(response):
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="minis3"'
    return response


def init_identify(app: Flask, settings: Settings) -> None:
    """Register identification; call before the rate limiter is set up."""
    store = app.extensions["minis3.store"]
    app.extensions["minis3.auth"] = Authenticator(ApiKeys(store.meta), settings.auth)
    if settings.auth == "open":
        log.warning("MINIS3_AUTH=open: serving WITHOUT authentication")
    app.before_request(identify)


def init_enforce(app: Flask) -> None:
    """Register enforcement; call after the rate limiter is set up."""
    app.before_request(enforce)
    app.after_request(challenge)


# --- `minis3 keys` ------------------------------------------------------------------------------

def keys_command(settings: Settings, action: str, tenant: str | None = None, key_id: str | None = None,
                 s3: bool = False, admin: bool = False) -> int:
    """create: print a new key once (stdout), an operator's with ``admin``; ``s3``: an S3 access key
    id and secret as AWS_* variables; list: every key, API and S3, without secrets; revoke: by id or
    key (an ``AKMS...`` id: an S3 key)."""
    if not settings.mongo_url:
        print("minis3: MINIS3_MONGO_URL is not set (`minis3 run` prints the embedded MongoDB's address)",
              file=sys.stderr)
        return 2
    meta = Metadata.connect(settings.mongo_url, settings.mongo_db)
    try:
        meta.ensure_indexes()
        keys = ApiKeys(meta)
        s3_keys = S3Credentials(meta, settings.secret_key or (load_or_create(settings.var_dir) if s3 else ""),
                                records_generation(settings.redis_url))
        if action == "create" and s3:
            access_key_id, secret = s3_keys.create(tenant or "")
            print(f"AWS_ACCESS_KEY_ID={access_key_id}\nAWS_SECRET_ACCESS_KEY={secret}")
            print(f"minis3: S3 key {access_key_id} for tenant {tenant!r}; this is the only time the secret is shown",
                  file=sys.stderr)
        elif action == "create":
            plaintext, key = keys.create(tenant or "", admin=admin)
            print(plaintext)
            role = " (admin: store-wide stats and metrics)" if key.admin else ""
            print(f"minis3: key {key.id} for tenant {key.tenant!r}{role}; this is the only time it is shown",
                  file=sys.stderr)
        elif action == "list":
            print(json.dumps([k.to_json() for k in keys.list()] + [k.to_json() for k in s3_keys.list()], indent=2))
        elif is_access_key_id(key_id or ""):
            print(json.dumps(s3_keys.revoke(key_id).to_json(), indent=2))
        else:
            print(json.dumps(keys.revoke(key_id or "").to_json(), indent=2))
        return 0
    except StoreError as exc:
        print(f"minis3: {exc.message}", file=sys.stderr)
        return 1
    finally:
        meta.client.close()
