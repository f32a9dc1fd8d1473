"""API keys, auth modes, where the service listens, HSTS and the OpenAPI route map, in-process.

Runs on its own nx-27017 (``backends`` from tests.probes): keys made here stay here.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import time
from datetime import datetime

import pytest

from app import create_app
from app.auth import Authenticator
from app.serving import listen_host
from app.openapi import describe
from config import embedded
from config.settings import SettingsError
from pipeline.access.keys import ApiKey, ApiKeys, hash_key
from tests.probes import private_backends as backends  # noqa: F401
from tests.stack import BIN, ROOT


ISO_8601 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def client(settings, store):
    return create_app(settings, store=store, enqueue=lambda *a, **_: None).test_client()


def test_hsts_only_over_https_and_forwarded_proto_only_from_a_trusted_proxy(settings, store):
    def get(app, base="http://x", **headers):
        return app.test_client().get("/api/health", headers=headers, base_url=base)

    direct = create_app(settings, store=store, enqueue=lambda *a, **_: None)
    proxied = create_app(settings.with_overrides(trusted_proxies=1), store=store, enqueue=lambda *a, **_: None)
    assert "Strict-Transport-Security" not in get(direct).headers
    assert "Strict-Transport-Security" not in get(direct, **{"X-Forwarded-Proto": "https"}).headers
    assert get(direct, base="https://x").headers["Strict-Transport-Security"].startswith("max-age=")
    assert get(proxied, **{"X-Forwarded-Proto": "https"}).headers["Strict-Transport-Security"]
    assert "Strict-Transport-Security" not in get(proxied).headers


def test_keys_cli_prints_a_key_once_and_stores_only_its_hash(settings, store):
    env = {**os.environ, **settings.to_env()}

    def minis3(*args):
        return subprocess.run([str(BIN / "minis3"), "keys", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)

    created = minis3("create", "--tenant", "acme")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("ms3_")
    docs = store.meta.access.list_api_keys()
    assert len(docs) == 1 and docs[0]["tenant"] == "acme"
    stored = store.meta.access.find_api_key(hash_key(key))
    assert stored is not None and key not in json.dumps(stored, default=str)
    listed = minis3("list")
    assert listed.returncode == 0 and key not in listed.stdout
    assert json.loads(listed.stdout)[0]["tenant"] == "acme"
    created_at = json.loads(listed.stdout)[0]["created"]
    assert ISO_8601.match(created_at) and json.loads(listed.stdout)[0]["revoked"] is None
    assert abs(datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp() - time.time()) < 120
    assert ApiKeys(store.meta).authenticate(key).tenant == "acme"
    revoked = minis3("revoke", json.loads(listed.stdout)[0]["id"])
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["active"] is False
    assert json.loads(revoked.stdout)["created"] == created_at
    assert ISO_8601.match(json.loads(revoked.stdout)["revoked"])
    assert isinstance(store.meta.access.list_api_keys()[0]["revoked"], float)  # MongoDB keeps epoch seconds
    assert ApiKeys(store.meta).authenticate(key) is None
    assert minis3("create", "--tenant", "../evil").returncode == 1
    assert minis3("revoke", "nosuchkey").returncode == 1


def test_keys_cli_creates_admin_keys_only_when_asked(settings, store):
    env = {**os.environ, **settings.to_env()}

    def create(*args):
        run = subprocess.run([str(BIN / "minis3"), "keys", "create", *args], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        return run.stdout.strip(), run.stderr

    operator, said = create("--tenant", "ops", "--admin")
    tenant, _ = create("--tenant", "acme")
    assert "admin" in said
    keys = ApiKeys(store.meta)
    assert keys.authenticate(operator).admin is True
    assert keys.authenticate(tenant).admin is False
    assert {d["tenant"]: d["admin"] for d in store.meta.access.list_api_keys()} == {"ops": True, "acme": False}
    listed = subprocess.run([str(BIN / "minis3"), "keys", "list"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert {k["tenant"]: k["admin"] for k in json.loads(listed.stdout)} == {"ops": True, "acme": False}


def test_a_key_shows_its_times_as_iso_8601_utc():
    key = ApiKey.from_mongo({"_id": "0123456789ab", "tenant": "acme", "created": 1795624769.671,
                             "revoked": 1795624800.0, "admin": True})
    assert key.to_json() == {"id": "0123456789ab", "tenant": "acme", "admin": True,
                             "created": "2026-11-25T16:39:29.671Z", "revoked": "2026-11-25T16:40:00.000Z",
                             "active": False}


def test_a_key_document_without_the_admin_field_is_not_an_admin(store):
    plaintext, key = ApiKeys(store.meta).create("old")
    store.meta.db.api_keys.update_one({"_id": key.id}, {"$unset": {"admin": ""}})  # made before the role existed
    assert ApiKeys(store.meta).authenticate(plaintext).admin is False


def test_open_service_listens_on_loopback_only(settings, store):
    public = settings.with_overrides(host="0.0.0.0")
    assert listen_host(public.with_overrides(auth="open")) == "127.0.0.1"
    assert listen_host(public.with_overrides(auth="auto")) == "127.0.0.1"  # no key yet
    assert listen_host(public.with_overrides(auth="required")) == "0.0.0.0"
    ApiKeys(store.meta).create("ops")
    assert listen_host(public.with_overrides(auth="auto")) == "0.0.0.0"
    down = f"mongodb://127.0.0.1:{embedded.free_port()}/"
    assert listen_host(public.with_overrides(auth="auto", mongo_url=down)) == "127.0.0.1"  # fail closed


def test_bad_rate_limit_setting_is_refused_at_start(settings, store):
    with pytest.raises(SettingsError):
        create_app(settings.with_overrides(rate_limit="lots"), store=store, enqueue=lambda *a, **_: None)


def _shape(path: str) -> str:
    return re.sub(r"<[^>]+>|\{[^}]+\}", "{}", path)


def test_openapi_describes_every_api_route_and_method(settings, store):
    spec = client(settings, store).get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = {(_shape(p), m.upper()) for p, ops in spec["paths"].items() for m in ops}
    app = create_app(settings, store=store, enqueue=lambda *a, **_: None)
    routed = {(_shape(r.rule), m) for r in app.url_map.iter_rules() if r.rule.startswith("/api/")
              for m in r.methods - {"HEAD", "OPTIONS"}}
    assert routed == documented
    assert spec["security"][0] == {}  # open: no key exists yet, a key is optional
    ApiKeys(store.meta).create("ops")
    assert client(settings, store).get("/api/openapi.json").get_json()["security"] == \
        describe(keys_required=True)["security"] == [{"bearer": []}, {"apiKey": []}]


def test_open_mode_needs_no_key_but_honours_and_checks_one_that_is_sent(settings, store):
    key = ApiKeys(store.meta).create("acme")[0]
    c = client(settings.with_overrides(auth="open"), store)
    anonymous = c.post("/api/upload", data={"file": (io.BytesIO(b"anon"), "a.txt")},
                       content_type="multipart/form-data")
    assert anonymous.status_code == 202
    assert store.meta.files.get_file(anonymous.get_json()["fileId"]).tenant == "default"
    assert c.get("/api/files", headers={"Authorization": f"Bearer {key}"}).get_json()["files"] == []
    bad = c.get("/api/files", headers={"Authorization": "Bearer ms3_nope"})
    assert bad.status_code == 401 and bad.get_json()["error"]["code"] == "unauthorized"


def test_auto_mode_requires_keys_once_the_first_exists_and_looks_again_only_after_its_period(store):
    keys = ApiKeys(store.meta)
    patient, eager = Authenticator(keys, "auto", recheck_s=3600), Authenticator(keys, "auto", recheck_s=0)
    assert not patient.keys_required() and not eager.keys_required()
    keys.revoke(keys.create("acme")[1].id)  # a revoked key counts: auth never switches back off
    assert eager.keys_required()
    assert not patient.keys_required()  # believes its last look for an hour
    assert Authenticator(keys, "auto", recheck_s=3600).keys_required()


def test_required_mode_refuses_every_api_call_without_a_key_but_health(settings, store):
    c = client(settings.with_overrides(auth="required"), store)
    for method, path in [("GET", "/api/files"), ("POST", "/api/upload"), ("GET", "/api/stats"),
                         ("GET", "/api/files/" + "0" * 24), ("DELETE", "/api/files/" + "0" * 24)]:
        r = c.open(path, method=method)
        assert r.status_code == 401, path
        assert r.get_json() == {"success": False, "error": {
            "code": "unauthorized", "message": "an API key is required: send 'Authorization: Bearer <key>'"}}
    assert c.get("/api/health").status_code == 200
    assert c.get("/api/openapi.json").status_code == 200
