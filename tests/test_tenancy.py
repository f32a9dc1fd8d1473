"""What one tenant can learn about another: store-wide views (/api/stats, /metrics) are an
operator's (an admin key, or a service running open on loopback); a tenant's key sees figures of
its own files only.

Runs on its own nx-27017 (``backends`` from tests.probes): keys made here stay here.
"""
from __future__ import annotations

import hashlib
import io
import os
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from config.settings import Settings, SettingsError
from pipeline.access.keys import ApiKeys
from tests.probes import bearer, create_key, private_backends as backends  # noqa: F401
from tests.stack import MiB, Stack, random_bytes, wait_for

STORE_FIELDS = {"success", "scope", "files", "logicalBytes", "physicalBytes", "uniqueBytes", "dedupRatio",
                "dedupSavedBytes", "chunks", "fragments", "nodes", "layout", "degradedChunks", "fragmentsHealed",
                "chunksHealed", "scrub", "ecConvert",
                "queueDepth", "lastGc", "tenant", "usage", "tenants"}


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
        "usage": None,  # the sampler (beat) has not run on this stack: see tests/test_dashboard.py
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
    assert store_wide["dedupSavedBytes"] == store_wide["logicalBytes"] - store_wide["uniqueBytes"]
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
    key = ApiKeys(store.meta).create("acme")[0]
    client = create_app(settings.with_overrides(auth="open"), store=store, enqueue=lambda *a, **_: None).test_client()
    client.post("/api/upload", data={"file": (io.BytesIO(b"open"), "o.txt")}, content_type="multipart/form-data")
    for headers in ({}, bearer(key)):
        answer = client.get("/api/stats", headers=headers).get_json()
        assert answer["scope"] == "store" and answer["files"]["byStatus"]["queued"] == 1, headers
        assert client.get("/metrics", headers=headers).status_code == 200, headers


def test_metrics_need_an_admin_key_in_auto_mode_once_a_key_exists(settings, store):
    keys = ApiKeys(store.meta)
    tenant, admin = keys.create("acme")[0], keys.create("ops", admin=True)[0]
    client = create_app(settings, store=store, enqueue=lambda *a, **_: None).test_client()  # auto, a key exists
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


# --- nothing a tenant sees depends on another tenant's content ------------------------------------

TIMESTAMPS = {"created", "updated"}
VARYING_HEADERS = {"date", "x-request-id", "content-length"}  # JSON lengths vary with the timestamps


@contextmanager
def worker_paused(stack):
    os.killpg(stack.procs["worker"].pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(stack.procs["worker"].pid, signal.SIGCONT)


class TenantView:
    """Everything one tenant is shown, with what names its own upload (ids, its content's hash, its
    tenant name) masked and timestamps left out, so that two tenants' views compare field by field."""

    def __init__(self, stack, name: str, headers: dict):
        self.stack, self.name, self.headers = stack, name, headers
        self.masks: dict[str, str] = {name: "<tenant>"}
        self.seen: list = []

    def mask(self, value):
        if isinstance(value, dict):
            return {k: self.mask(v) for k, v in value.items() if k not in TIMESTAMPS}
        if isinstance(value, list):
            return [self.mask(v) for v in value]
        if isinstance(value, str):
            for secret, placeholder in self.masks.items():
                value = value.replace(secret, placeholder)
        return value

    def record(self, what: str, r: requests.Response, body: bool = True) -> requests.Response:
        headers = {k.lower(): self.mask(v) for k, v in r.headers.items() if k.lower() not in VARYING_HEADERS}
        shown = self.mask(r.json()) if body and r.headers.get("Content-Type", "").startswith("application/json") \
            else len(r.content)
        self.seen.append((what, r.status_code, headers, shown))
        return r

    def call(self, what: str, method: str, path: str, **kw) -> requests.Response:
        r = requests.request(method, self.stack.url(path), headers={**self.headers, **kw.pop("headers", {})},
                             timeout=60, **kw)
        return self.record(what, r)

    def upload(self, what: str, data: bytes, wait: bool = False) -> str:
        r = self.stack.upload(data, "same-name.bin", wait=wait, headers=self.headers)
        file_id = r.json()["fileId"]
        self.masks[file_id] = f"<file {len(self.masks)}>"
        self.masks[hashlib.sha256(data).hexdigest()] = f"<sha256 {len(self.masks)}>"
        self.record(what, r)
        return file_id

    def look_at(self, what: str, file_id: str, data: bytes) -> None:
        self.call(f"{what}: status", "GET", f"/api/files/{file_id}/status")
        self.call(f"{what}: listing", "GET", "/api/files?limit=10")
        self.call(f"{what}: stats", "GET", "/api/stats")
        self.call(f"{what}: metrics", "GET", "/metrics")
        self.call(f"{what}: health", "GET", "/api/health")
        got = self.call(f"{what}: download", "GET", f"/api/files/{file_id}")
        if got.status_code == 200:
            assert got.content == data
            self.call(f"{what}: range", "GET", f"/api/files/{file_id}", headers={"Range": "bytes=100-2000000"})
            self.call(f"{what}: by hash", "GET", f"/api/files/by-hash/{hashlib.sha256(data).hexdigest()}")
            self.call(f"{what}: not modified", "GET", f"/api/files/{file_id}",
                      headers={"If-None-Match": got.headers["ETag"]})


def test_a_tenant_cannot_tell_whether_another_tenant_already_stores_its_content(keyed):
    """Tenant B uploads what tenant A stores; tenant C the same shapes of content nobody stores.
    Every answer, header, status, progress and figure they see is the same."""
    _, a = new_tenant(keyed)
    known = [random_bytes(3 * MiB + 5, 8201), random_bytes(MiB + 7, 8202)]
    novel = [random_bytes(3 * MiB + 5, 8211), random_bytes(MiB + 7, 8212)]
    for data in known:
        keyed.put(data, headers=a)
    b, c = (TenantView(keyed, *new_tenant(keyed)) for _ in range(2))

    chunks = keyed.chunk_files()
    with worker_paused(keyed):  # both wait in the queue: the answers before ingest compare too
        ids = {view: view.upload("upload", data[0]) for view, data in ((b, known), (c, novel))}
        for view, data in ((b, known), (c, novel)):
            view.look_at("queued", ids[view], data[0])
    for view, data in ((b, known), (c, novel)):
        assert keyed.wait_status(ids[view], headers=view.headers)["status"] == "stored"
        view.look_at("stored", ids[view], data[0])
    added = set(keyed.chunk_files()) - set(chunks)
    k, m = keyed.settings.ec_layout
    assert len(added) == 4 * (k + m)  # the store did deduplicate B's upload: only C's chunks are new

    for view, data in ((b, known), (c, novel)):
        waited = view.upload("upload ?wait=1", data[1], wait=True)
        view.look_at("stored after ?wait=1", waited, data[1])
        view.call("delete", "DELETE", f"/api/files/{waited}")
        view.look_at("deleted", waited, data[1])
    assert len(set(keyed.chunk_files()) - set(chunks)) == 6 * (k + m)

    assert [what for what, *_ in b.seen] == [what for what, *_ in c.seen]
    for seen_by_b, seen_by_c in zip(b.seen, c.seen):
        assert seen_by_b == seen_by_c
    statuses = {(what, status) for what, status, *_ in b.seen}
    # readable once acknowledged: a queued file is served from the spool
    assert ("queued: download", 200) in statuses and ("stored: download", 200) in statuses
    assert ("upload ?wait=1", 201) in statuses and ("stored: metrics", 403) in statuses


# --- health ---------------------------------------------------------------------------------------

def test_health_shows_node_space_and_paths_to_operators_only(keyed, settings, store):
    public = requests.get(keyed.url("/api/health"), headers=keyed.admin, timeout=30)
    assert public.status_code == 200
    # free space drops when a new chunk is written and not when content is deduplicated
    assert public.json()["nodes"] == [{"node": f"node-{i}", "ok": True} for i in (1, 2, 3)]
    nodes = stats(keyed, keyed.admin)["nodes"]
    assert all(0 < n["freeBytes"] <= n["totalBytes"] for n in nodes)
    open_app = create_app(settings.with_overrides(auth="open"), store=store, enqueue=lambda *a, **_: None)
    detailed = open_app.test_client().get("/api/health").get_json()["nodes"]
    assert [set(n) for n in detailed] == [{"node", "path", "ok", "state", "freeBytes", "totalBytes"}] * 3
