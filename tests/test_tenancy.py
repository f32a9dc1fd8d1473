"""What one tenant can learn about another: store-wide views (/api/stats, /metrics) are an
operator's (an admin key, or a service running open on loopback); a tenant's key sees figures of
its own files only.

Runs on its own nx-27017 (``backends`` from tests.probes): keys made here stay here.
"""
from __future__ import annotations

import io
import uuid
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from config.settings import Settings, SettingsError
from pipeline.keys import ApiKeys
from tests.probes import bearer, create_key, private_backends as backends  # noqa: F401
from tests.stack import MiB, Stack, random_bytes, wait_for

STORE_FIELDS = {"success", "scope", "files", "logicalBytes", "physicalBytes", "dedupRatio", "chunks", "nodes",
                "queueDepth", "lastGc"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory, backends):
    """Keys required; an operator's key beside the tenants' keys each test makes."""
    s = Stack(tmp_path_factory.mktemp("keyed"), backends, auth="required")
    s.admin = bearer(create_key(s, "ops", admin=True))
    yield s
    s.stop()


def new_tenant(stack) -> tuple[str, dict]:
    name = "t-" + uuid.uuid4().hex[:8]
    return name, bearer(create_key(stack, name))


def stats(stack, headers) -> dict:
    r = requests.get(stack.url("/api/stats"), headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# --- /api/stats -------------------------------------------------------------------------------

def test_a_tenant_key_gets_only_its_own_files_and_logical_bytes(keyed):
    name, own = new_tenant(keyed)
    _, other = new_tenant(keyed)
    shared = random_bytes(2 * MiB + 5, 8001)
    keyed.put(shared, "mine.bin", headers=own)
    keyed.put(shared, "theirs.bin", headers=other)  # deduplicated against this tenant's chunks
    keyed.put(random_bytes(MiB, 8002), headers=other)
    deleted = keyed.put(random_bytes(1000, 8003), headers=own)
    assert requests.delete(keyed.url(f"/api/files/{deleted}"), headers=own, timeout=30).status_code == 204

    assert stats(keyed, own) == {
        "success": True, "scope": "tenant", "tenant": name,
        "files": {"total": 2, "byStatus": {"queued": 0, "processing": 0, "stored": 1, "failed": 0, "deleted": 1}},
        "logicalBytes": len(shared),
    }


def test_an_admin_key_gets_the_store_wide_figures(keyed):
    _, own = new_tenant(keyed)
    data = random_bytes(MiB + 1, 8011)
    keyed.put(data, headers=own)
    keyed.put(data, headers=own)
    store_wide = stats(keyed, keyed.admin)
    assert set(store_wide) == STORE_FIELDS and store_wide["scope"] == "store"
    assert store_wide["logicalBytes"] >= 2 * len(data)
    assert store_wide["physicalBytes"] == sum(keyed.chunk_files().values())
    assert [n["node"] for n in store_wide["nodes"]] == ["node-1", "node-2", "node-3"]


def test_stats_without_a_key_is_401_when_keys_are_required(keyed):
    r = requests.get(keyed.url("/api/stats"), timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


# --- /metrics on the web port -------------------------------------------------------------------

def test_metrics_on_the_web_port_need_an_admin_key_when_keys_are_required(keyed):
    _, own = new_tenant(keyed)
    anonymous = requests.get(keyed.url("/metrics"), timeout=30)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    tenant = requests.get(keyed.url("/metrics"), headers=own, timeout=30)
    assert tenant.status_code == 403 and tenant.json()["error"]["code"] == "forbidden"
    assert "minis3_" not in tenant.text
    admin = requests.get(keyed.url("/metrics"), headers=keyed.admin, timeout=30)
    assert admin.status_code == 200 and admin.headers["Content-Type"].startswith("text/plain")
    assert ("minis3_ingest_queue_depth", ()) in samples(admin.text)


def test_an_open_service_shows_every_caller_the_store_wide_views(settings, store):
    key = ApiKeys(store.repo).create("acme")[0]
    client = create_app(settings.with_overrides(auth="open"), store=store, enqueue=lambda *a: None).test_client()
    client.post("/api/upload", data={"file": (io.BytesIO(b"open"), "o.txt")}, content_type="multipart/form-data")
    for headers in ({}, bearer(key)):
        answer = client.get("/api/stats", headers=headers).get_json()
        assert answer["scope"] == "store" and answer["files"]["byStatus"]["queued"] == 1, headers
        assert client.get("/metrics", headers=headers).status_code == 200, headers


def test_metrics_need_an_admin_key_in_auto_mode_once_a_key_exists(settings, store):
    keys = ApiKeys(store.repo)
    tenant, admin = keys.create("acme")[0], keys.create("ops", admin=True)[0]
    client = create_app(settings, store=store, enqueue=lambda *a: None).test_client()  # auto, a key exists
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(tenant)).status_code == 403
    assert client.get("/metrics", headers=bearer(admin)).status_code == 200
    assert client.get("/api/stats", headers=bearer(tenant)).get_json()["scope"] == "tenant"
    assert client.get("/api/stats", headers=bearer(admin)).get_json()["scope"] == "store"


# --- /metrics on its own loopback listener ------------------------------------------------------

def listeners(stack, port: int) -> dict[int, set[str]]:
    """gunicorn worker pid -> the addresses it listens on at ``port``."""
    master = psutil.Process(stack.procs["web"].pid)
    out = {}
    for worker in master.children():
        out[worker.pid] = {c.laddr.ip for c in worker.net_connections("tcp")
                           if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    return out


def test_metrics_port_serves_every_process_on_loopback_and_the_web_port_has_no_metrics(tmp_path, backends):
    from config import embedded

    port = embedded.free_port()
    s = Stack(tmp_path / "s", backends, auth="required", metrics_port=port, web_workers=2)
    try:
        admin = bearer(create_key(s, "ops", admin=True))
        for headers in ({}, admin):
            r = requests.get(s.url("/metrics"), headers=headers, timeout=30)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        # each of the two web workers listens, on loopback only
        found = wait_for(lambda: (seen := listeners(s, port)) and len(seen) == 2 and all(seen.values()) and seen,
                         what="both web workers to listen on the metrics port")
        assert all(addresses == {"127.0.0.1"} for addresses in found.values()), found

        scrape = f"http://127.0.0.1:{port}/metrics"
        before = samples(requests.get(scrape, timeout=30).text)
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: requests.get(s.url("/api/health"), timeout=30).status_code, range(30)))
        assert codes == [200] * 30
        s.put(random_bytes(MiB, 8101), headers=admin)  # the celery worker's series are served too
        health = ("minis3_http_requests_total", (("method", "GET"), ("route", "/api/health"), ("status", "200")))
        ingests = ("minis3_ingests_total", (("status", "stored"),))

        def moved():
            after = samples(requests.get(scrape, timeout=30).text)
            return (after.get(health, 0) - before.get(health, 0) == 30
                    and after.get(ingests, 0) - before.get(ingests, 0) == 1 and after)

        wait_for(moved, timeout=30, what="the scrape to count both web workers and the ingest")
        # a web worker dies: the listener goes on in the other one and in its replacement
        victim = psutil.Process(next(iter(found)))
        victim.kill()
        psutil.wait_procs([victim], timeout=30)
        assert samples(requests.get(scrape, timeout=30).text).get(health, 0) >= 30
        wait_for(lambda: (seen := listeners(s, port)) and victim.pid not in seen and len(seen) == 2
                 and all(seen.values()), what="the replacement worker to listen too")
    finally:
        s.stop()


@pytest.mark.parametrize("value", ["-1", "65536", "3000"])
def test_a_metrics_port_out_of_range_or_on_the_web_port_is_refused_at_start(value):
    with pytest.raises(SettingsError):
        Settings.from_env({"MINIS3_METRICS_PORT": value, "MINIS3_PORT": "3000"})
