"""Security over real HTTP: secure headers, CORS, API keys and tenants, rate limits stored in Redis.

This module runs on its own nx-27017 (``backends`` from tests.probes) so that its API keys never
reach the session-wide one.
"""
from __future__ import annotations

import hashlib
import re
import subprocess
import time

import pytest
import requests

from app.auth import KEYS_RECHECK_S
from config import embedded
from pipeline.access.keys import ApiKeys
from tests.probes import bearer, create_key, private_backends as backends, repo_of  # noqa: F401
from tests.stack import BIN, ROOT, Backends, MiB, Stack, random_bytes

ORIGIN = "https://app.example"
HELMET = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@pytest.fixture(scope="module")
def secure(tmp_path_factory, backends):
    """Keys required, one allowed CORS origin, no rate limit."""
    s = Stack(tmp_path_factory.mktemp("secure"), backends, auth="required", cors_origins=(ORIGIN,))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def alpha(secure):
    return bearer(create_key(secure, "alpha"))


@pytest.fixture(scope="module")
def beta(secure):
    return bearer(create_key(secure, "beta"))


# --- headers ------------------------------------------------------------------------------------

def assert_secure_headers(r: requests.Response) -> None:
    for name, value in HELMET.items():
        assert r.headers.get(name) == value, (r.request.method, r.url, name)
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    server = r.headers.get("Server", "")
    assert "gunicorn" not in server.lower() and not re.search(r"/|\d+\.\d+", server), server
    assert "Strict-Transport-Security" not in r.headers  # plain http


def test_every_answer_has_secure_headers_and_no_server_banner(secure, alpha):
    file_id = secure.put(b"headers", headers=alpha)
    answers = [
        requests.get(secure.url("/api/health"), timeout=30),                              # 200
        requests.get(secure.url(f"/api/files/{file_id}"), headers=alpha, timeout=30),    # 200 bytes
        requests.get(secure.url("/api/files"), timeout=30),                              # 401
        requests.get(secure.url("/api/files/nothex"), headers=alpha, timeout=30),        # 400
        requests.get(secure.url("/api/files/" + "0" * 24), headers=alpha, timeout=30),   # 404
        requests.put(secure.url("/api/upload"), headers=alpha, timeout=30),              # 405
        requests.get(secure.url("/nowhere"), timeout=30),                                # 404
    ]
    assert [r.status_code for r in answers] == [200, 200, 401, 400, 404, 405, 404]
    for r in answers:
        assert_secure_headers(r)
    for r in answers[2:]:
        assert r.json()["success"] is False and r.json()["error"]["code"]



# --- CORS ---------------------------------------------------------------------------------------

def test_cors_listed_origin_gets_headers_and_a_preflight_answer(secure, alpha):
    pre = requests.options(secure.url("/api/upload"), timeout=30, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status_code == 200  # a preflight needs no key
    assert pre.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert "authorization" in pre.headers["Access-Control-Allow-Headers"].lower()
    r = requests.get(secure.url("/api/files"), headers={**alpha, "Origin": ORIGIN}, timeout=30)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "ETag" in r.headers["Access-Control-Expose-Headers"]
    denied = requests.get(secure.url("/api/files"), headers={"Origin": ORIGIN}, timeout=30)
    assert denied.status_code == 401 and denied.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_cors_other_origins_get_no_cors_headers(secure, alpha):
    evil = "https://evil.example"
    pre = requests.options(secure.url("/api/upload"), timeout=30,
                           headers={"Origin": evil, "Access-Control-Request-Method": "POST"})
    r = requests.get(secure.url("/api/files"), headers={**alpha, "Origin": evil}, timeout=30)
    assert r.status_code == 200
    for answer in (pre, r):
        assert not [h for h in answer.headers if h.lower().startswith("access-control-")]


# --- API keys and tenants -----------------------------------------------------------------------

def test_requests_without_a_valid_key_get_401(secure, alpha):
    revoked = create_key(secure, "gamma")
    meta = repo_of(secure)
    ApiKeys(meta).revoke(revoked)
    meta.client.close()
    cases = {
        "none": {},
        "unknown": bearer("ms3_000000000000_" + "A" * 43),
        "garbage": bearer("not-a-key"),
        "revoked": bearer(revoked),
        "basic": {"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"},
    }
    for name, headers in cases.items():
        r = requests.get(secure.url("/api/files"), headers=headers, timeout=30)
        assert r.status_code == 401, name
        assert r.json()["error"]["code"] == "unauthorized", name
        assert r.headers["WWW-Authenticate"].startswith("Bearer"), name
    r = secure.upload(b"no key")
    assert r.status_code == 401
    assert requests.get(secure.url("/api/health"), timeout=30).status_code == 200  # health is public


def test_x_api_key_header_works_like_bearer(secure, alpha):
    key = alpha["Authorization"].split(" ", 1)[1]
    file_id = secure.put(b"via x-api-key", headers={"X-API-Key": key})
    assert secure.download(file_id, headers=alpha).content == b"via x-api-key"


def test_a_tenant_sees_only_its_own_files_and_dedup_stays_global(secure, alpha, beta):
    data = random_bytes(3 * MiB, 4100)
    a_id = secure.put(data, "alpha.bin", headers=alpha)
    chunks_before = secure.chunk_files()
    unknown = requests.get(secure.url("/api/files/" + "0" * 24), headers=beta, timeout=30)
    for method, path in [("GET", f"/api/files/{a_id}"), ("GET", f"/api/files/{a_id}/status"),
                         ("DELETE", f"/api/files/{a_id}"),
                         ("GET", f"/api/files/by-hash/{hashlib.sha256(data).hexdigest()}")]:
        r = requests.request(method, secure.url(path), headers=beta, timeout=30)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
    listing = requests.get(secure.url("/api/files?limit=1000"), headers=beta, timeout=30).json()
    assert a_id not in [f["fileId"] for f in listing["files"]]
    b_id = secure.put(data, "beta.bin", headers=beta)       # same bytes, other tenant
    assert secure.chunk_files() == chunks_before              # no chunk stored twice
    assert secure.download(b_id, headers=beta).content == data
    assert secure.download(a_id, headers=alpha).content == data  # beta's DELETE did nothing
    assert requests.delete(secure.url(f"/api/files/{b_id}"), headers=beta, timeout=30).status_code == 204
    assert secure.download(a_id, headers=alpha).content == data
    meta = repo_of(secure)
    assert meta.files.get_file(a_id).tenant == "alpha" and meta.files.get_file(b_id).tenant == "beta"
    meta.client.close()



def test_auto_mode_is_open_until_the_first_key_exists(tmp_path):
    fresh = Backends(tmp_path / "mongo")  # no key anywhere yet
    s = Stack(tmp_path / "s", fresh, worker=False)  # MINIS3_AUTH defaults to auto
    try:
        assert requests.get(s.url("/api/files"), timeout=30).status_code == 200
        assert "WITHOUT authentication" in s.log("web")
        key = create_key(s, "first")
        assert requests.get(s.url("/api/files"), headers=bearer(key), timeout=30).status_code == 200
        time.sleep(KEYS_RECHECK_S)  # each web process believes "no key yet" this long after it last looked
        answers = [requests.get(s.url("/api/files"), timeout=30) for _ in range(6)]
        assert {r.status_code for r in answers} == {401}
        assert answers[0].json()["error"]["code"] == "unauthorized"
    finally:
        s.stop()
        fresh.stop()



# --- rate limits --------------------------------------------------------------------------------

def start_second_web(stack, root) -> tuple[subprocess.Popen, str]:
    """Another gunicorn 'host' on the same Redis and MongoDB."""
    port = embedded.free_port()
    out = open(root / "web2.log", "ab")
    proc = subprocess.Popen([str(BIN / "gunicorn"), "-c", "python:app.gunicorn_conf", "app.wsgi:app"],
                            env={**stack.env, "MINIS3_PORT": str(port)}, cwd=ROOT, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    embedded.wait_for_port(port, timeout=60, proc=proc)
    return proc, f"http://127.0.0.1:{port}"


def test_rate_limit_is_per_key_shared_across_web_hosts_and_answers_429(tmp_path, backends):
    # an hour-long window that counts from the first request: the burst below cannot straddle it
    s = Stack(tmp_path / "s", backends, worker=False, rate_limit="5 per hour", web_workers=2)
    web2, url2 = start_second_web(s, tmp_path)
    try:
        one, two = bearer(create_key(s, "one")), bearer(create_key(s, "two"))
        urls = [s.base_url, url2, s.base_url, url2, s.base_url]
        started = time.time()
        answers = [requests.get(u + "/api/files", headers=one, timeout=30) for u in urls]
        assert [r.status_code for r in answers] == [200] * 5
        assert [r.headers["X-RateLimit-Limit"] for r in answers] == ["5"] * 5
        # one budget, counted down by both hosts: the count lives in Redis, not in a process
        assert [r.headers["X-RateLimit-Remaining"] for r in answers] == ["4", "3", "2", "1", "0"]
        # the hour counts from the first request, not from a clock boundary
        resets = {int(r.headers["X-RateLimit-Reset"]) for r in answers}
        assert len(resets) == 1 and started + 3600 - 2 <= resets.pop() <= time.time() + 3600 + 1
        over = requests.get(url2 + "/api/files", headers=one, timeout=30)
        assert over.status_code == 429
        assert over.json()["success"] is False and over.json()["error"]["code"] == "rate_limited"
        assert over.headers["X-RateLimit-Remaining"] == "0"
        assert int(over.headers["X-RateLimit-Reset"]) == int(answers[0].headers["X-RateLimit-Reset"])
        assert 3500 <= int(over.headers["Retry-After"]) <= 3601
        assert_secure_headers(over)
        # another key has its own budget; health is never limited
        other = requests.get(s.url("/api/files"), headers=two, timeout=30)
        assert other.status_code == 200 and other.headers["X-RateLimit-Remaining"] == "4"
        health = [requests.get(s.url("/api/health"), timeout=30) for _ in range(8)]
        assert all(r.status_code == 200 and "X-RateLimit-Limit" not in r.headers for r in health)
        # without a key the budget is the address's: 401s count against it
        anonymous = [requests.get(s.url("/api/files"), timeout=30) for _ in range(6)]
        assert [r.status_code for r in anonymous] == [401] * 5 + [429]
        assert [r.headers["X-RateLimit-Remaining"] for r in anonymous] == ["4", "3", "2", "1", "0", "0"]
    finally:
        embedded.stop(web2)
        s.stop()


def test_empty_rate_limit_setting_disables_limits(secure, alpha):
    answers = [requests.get(secure.url("/api/files?limit=1"), headers=alpha, timeout=30) for _ in range(120)]
    assert {r.status_code for r in answers} == {200}
    assert "X-RateLimit-Limit" not in answers[-1].headers


