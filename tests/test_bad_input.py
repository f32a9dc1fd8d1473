"""Bad input over real HTTP: every malformed request gets a clear 4xx JSON answer and leaves nothing
behind (no file document, no spool directory); filenames, ids, ranges; slow and idle clients;
Redis or MongoDB stopped and restarted under a running web process.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests

from config import embedded
from tests.probes import private_backends as backends  # noqa: F401  (its files stay out of other modules)
from tests.probes import (connect, exchange, file_ids, multipart, read_response, repo_of, request_head,
                          spool_dirs, wait_until)
from tests.stack import Backends, MiB, MultipartFile, Stack, random_bytes, random_chunks

LIMIT = 4 * MiB
TRICKLE_S = float(os.environ.get("MINIS3_TEST_TRICKLE_S", "125"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, backends):
    s = Stack(tmp_path_factory.mktemp("badinput"), backends, max_upload_bytes=LIMIT, header_timeout_s=3.0)
    yield s
    s.stop()


@pytest.fixture
def meta(stack):
    r = repo_of(stack)
    yield r
    r.client.close()


@pytest.fixture
def nothing_left_behind(stack, meta):
    """Asserts, after the test, that it added no file document and left no spool directory."""
    assert wait_until(lambda: not spool_dirs(stack)), spool_dirs(stack)
    before = file_ids(meta)
    yield
    assert wait_until(lambda: not spool_dirs(stack)), f"spool not cleaned: {spool_dirs(stack)}"
    assert file_ids(meta) == before


def post_raw(stack, content_type: str | None, body: bytes, **extra) -> tuple[int, dict, dict]:
    headers = {"Content-Length": str(len(body)), **extra}
    if content_type is not None:
        headers["Content-Type"] = content_type
    status, h, raw = exchange(stack.settings.port, request_head("POST", "/api/upload", headers), body)
    return status, h, json.loads(raw)


def assert_error(status: int, body: dict, want_status: int, code: str | None = None) -> None:
    assert status == want_status, body
    assert body["success"] is False and body["error"]["message"]
    if code:
        assert body["error"]["code"] == code, body


# --- malformed bodies ---------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain",
                                          "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_multipart_is_400(stack, nothing_left_behind, content_type):
    status, _, body = post_raw(stack, content_type, b'{"file": "not really"}')
    assert_error(status, body, 400, "malformed_upload")


def test_multipart_without_a_file_field_is_400(stack, nothing_left_behind):
    b = "bnd"
    form = (f"--{b}\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nhello\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"other\"; filename=\"x.bin\"\r\n\r\n"
            f"data\r\n--{b}--\r\n").encode()
    status, _, body = post_raw(stack, f"multipart/form-data; boundary={b}", form)
    assert_error(status, body, 400, "malformed_upload")
    assert "'file'" in body["error"]["message"]


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary=",
                                          "multipart/form-data; boundary=other"])
def test_missing_or_wrong_boundary_is_400(stack, nothing_left_behind, content_type):
    head, payload, tail = multipart(random_bytes(3 * MiB, 11), boundary="real")
    status, _, body = post_raw(stack, content_type, head + payload + tail)
    assert_error(status, body, 400, "malformed_upload")


def test_a_body_without_its_closing_boundary_is_400(stack, nothing_left_behind):
    head, payload, _ = multipart(random_bytes(2 * MiB + 7, 12), boundary="bb")
    status, _, body = post_raw(stack, "multipart/form-data; boundary=bb", head + payload)
    assert_error(status, body, 400, "malformed_upload")


def test_a_body_truncated_before_its_content_length_is_400(stack, nothing_left_behind):
    head, payload, tail = multipart(random_bytes(3 * MiB, 13), boundary="bb")
    whole = head + payload + tail
    headers = {"Content-Type": "multipart/form-data; boundary=bb", "Content-Length": str(len(whole))}
    status, _, raw = exchange(stack.settings.port, request_head("POST", "/api/upload", headers),
                              whole[: len(whole) // 2], half_close=True)
    body = json.loads(raw)
    assert_error(status, body, 400, "malformed_upload")
    assert "ended before" in body["error"]["message"]


def test_a_client_that_disconnects_mid_upload_leaves_nothing(stack, nothing_left_behind):
    head, payload, tail = multipart(random_bytes(2 * MiB, 14), boundary="bb")
    headers = {"Content-Type": "multipart/form-data; boundary=bb",
               "Content-Length": str(len(head) + LIMIT - 64 * 1024 + len(tail))}  # promised, never sent
    sock = connect(stack.settings.port)
    sock.sendall(request_head("POST", "/api/upload", headers) + head + payload)
    assert wait_until(lambda: spool_dirs(stack))  # the server is receiving it now
    sock.close()


# --- too large ----------------------------------------------------------------------------------

def test_content_length_over_the_limit_is_413_before_the_body_is_sent(stack, nothing_left_behind):
    headers = {"Content-Type": "multipart/form-data; boundary=bb", "Content-Length": str(LIMIT + 1)}
    with connect(stack.settings.port, timeout=20) as sock:
        sock.sendall(request_head("POST", "/api/upload", headers))  # and not one byte of body
        status, _, raw = read_response(sock)
    assert status == 413 and b'"too_large"' in raw


def test_a_chunked_body_over_the_limit_is_cut_off_with_413(stack, nothing_left_behind):
    head, _, _ = multipart(b"", boundary="bb")
    headers = {"Content-Type": "multipart/form-data; boundary=bb", "Transfer-Encoding": "chunked"}
    sock = connect(stack.settings.port, timeout=30)
    sent = {"bytes": 0}

    def send():
        try:
            sock.sendall(request_head("POST", "/api/upload", headers) + b"%x\r\n%s\r\n" % (len(head), head))
            for piece in random_chunks(LIMIT * 3, 15, piece=256 * 1024):
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent["bytes"] += len(piece)
        except OSError:  # the server answered and closed: expected
            pass

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        status, _, raw = read_response(sock)
    finally:
        sock.close()
        sender.join(10)
    assert status == 413 and b'"too_large"' in raw
    assert sent["bytes"] < LIMIT * 3  # cut off mid-stream, not read to the end


def test_a_body_at_the_limit_is_accepted(stack):
    size = LIMIT - 1024  # the multipart framing fits in the rest
    data = random_bytes(size, 16)
    file_id = stack.put(data)
    assert stack.download(file_id).content == data


# --- filenames ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sent, shown", [
    ("../../etc/passwd", "passwd"),
    ("/etc/shadow", "shadow"),
    ("C:\\Windows\\System32\\evil.exe", "evil.exe"),
    ("..\\..\\boot.ini", "boot.ini"),
    ("a\x00b\x07c\x1b[1m.txt", "abc[1m.txt"),
    ("x" * 996 + ".txt", "x" * 251 + ".txt"),
    ("\U0001f984 unicorn.png", "\U0001f984 unicorn.png"),
    ("\u5831\u544a 2024\u5e74.pdf", "\u5831\u544a 2024\u5e74.pdf"),
    ("..", "file"),
])
def test_filenames_become_safe_display_names_returned_rfc5987_encoded(stack, meta, sent, shown):
    data = sent.encode("utf-8", "surrogatepass")[:64] + b"!"
    file_id = stack.put(data, name=sent)
    r = stack.download(file_id)
    assert r.content == data
    cd = r.headers["Content-Disposition"]
    assert cd.startswith("attachment; filename=\"")
    assert unquote(cd.split("filename*=UTF-8''", 1)[1], errors="strict") == shown
    ascii_fallback = cd.split('filename="', 1)[1].split('"', 1)[0]
    assert all(32 <= ord(c) < 127 for c in ascii_fallback) and "/" not in ascii_fallback
    assert meta.files.get_file(file_id).name == shown
    listed = requests.get(stack.url("/api/files?limit=1000"), timeout=30).json()["files"]
    assert [f["name"] for f in listed if f["fileId"] == file_id] == [shown]
    root = Path(stack.root)
    assert not [p for p in root.rglob("*") if p.name in ("passwd", "shadow", "evil.exe", "boot.ini")]


# --- ids and ranges -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["abc", "0" * 23, "0" * 25, "g" * 24, "%20" * 8, "9" * 4000])
def test_malformed_ids_are_400_for_every_verb(stack, bad):
    for method, path in [("GET", f"/api/files/{bad}"), ("GET", f"/api/files/{bad}/status"),
                         ("DELETE", f"/api/files/{bad}")]:
        r = requests.request(method, stack.url(path), timeout=30)
        assert r.status_code == 400, (method, path[:40])
        assert r.json()["error"]["code"] == "invalid_id"


def test_well_formed_unknown_ids_are_404_for_every_verb(stack):
    for method, path in [("GET", "/api/files/0123456789abcdef01234567"),
                         ("GET", "/api/files/0123456789ABCDEF01234567/status"),
                         ("DELETE", "/api/files/0123456789abcdef01234567"),
                         ("GET", "/api/files/by-hash/" + "ab" * 32)]:
        r = requests.request(method, stack.url(path), timeout=30)
        assert r.status_code == 404, path
        assert r.json()["error"]["code"] == "not_found"


def test_malformed_ranges_are_ignored_and_unsatisfiable_ones_are_416(stack):
    data = random_bytes(100_000, 17)
    url = stack.url(f"/api/files/{stack.put(data)}")
    for header in ["bytes=abc", "bytes=5-2", "items=0-5", "bytes=0-1,5-6", "bytes=", "bytes=-0", "0-5",
                   "bytes=--1", "bytes=1-2-3", "bytes=\u00e9"]:
        r = requests.get(url, headers={"Range": header.encode("utf-8")}, timeout=30)
        assert r.status_code == 200 and r.content == data, header
    for header in [f"bytes={len(data)}-", f"bytes={len(data) + 5}-{len(data) + 9}"]:
        r = requests.get(url, headers={"Range": header}, timeout=30)
        assert r.status_code == 416, header
        assert r.headers["Content-Range"] == f"bytes */{len(data)}"
        assert r.json()["error"]["code"] == "range_not_satisfiable"


# --- slow and idle clients ----------------------------------------------------------------------

def test_an_upload_that_trickles_for_a_long_time_completes(stack):
    """The body arrives in small pieces over MINIS3_TEST_TRICKLE_S seconds (default 125: more than
    two minutes, longer than gunicorn's keep-alive and its 120 s worker timeout): the upload is
    still received whole and stored byte-exact."""
    data = random_bytes(256 * 1024, 18)
    pieces = 40
    step = len(data) // pieces

    def trickle():
        for i in range(pieces):
            yield data[i * step:(i + 1) * step if i < pieces - 1 else len(data)]
            time.sleep(TRICKLE_S / pieces)

    body = MultipartFile(trickle(), len(data), filename="slow.bin")
    started = time.monotonic()
    r = requests.post(stack.url("/api/upload"), data=body, headers={"Content-Type": body.content_type},
                      timeout=TRICKLE_S + 120)
    assert time.monotonic() - started >= TRICKLE_S * 0.9  # it really trickled
    assert r.status_code == 202, r.text
    assert stack.wait_status(r.json()["fileId"])["status"] == "stored"
    assert stack.download(r.json()["fileId"]).content == data


def test_fifty_idle_connections_do_not_stop_other_clients(stack):
    """25 connections that never send a byte and 25 kept alive after a request, against 2 web
    workers of 8 threads: other clients upload and download meanwhile, and the server closes the
    idle connections itself."""
    idle = []
    try:
        for i in range(50):
            sock = connect(stack.settings.port)
            if i % 2:
                sock.sendall(request_head("GET", "/api/health", {}))
                assert read_response(sock)[0] == 200  # and the connection stays open
            idle.append(sock)
        for seed in (19, 20):
            data = random_bytes(2 * MiB + seed, seed)
            file_id = stack.put(data)
            assert stack.download(file_id).content == data
        for sock in idle:
            sock.settimeout(30)
            assert sock.recv(1) == b""  # closed by the server
            sock.close()  # at once: gunicorn lingers on a closing socket until the peer closes too
    finally:
        for sock in idle:
            sock.close()


def test_clients_stuck_in_their_headers_are_cut_off_after_the_header_timeout(stack):
    """Slowloris: the request line and part of the headers, then nothing. The stack's
    MINIS3_HEADER_TIMEOUT_S is 3: the server closes them without an answer, and serves others."""
    stuck = [connect(stack.settings.port) for _ in range(8)]
    try:
        for sock in stuck:
            sock.sendall(b"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/")
        data = random_bytes(MiB + 21, 21)
        assert stack.download(stack.put(data)).content == data
        for sock in stuck:
            sock.settimeout(30)
            assert sock.recv(1) == b""
            sock.close()  # at once: gunicorn lingers on a closing socket until the peer closes too
    finally:
        for sock in stuck:
            sock.close()


# --- backing services down ----------------------------------------------------------------------

def test_redis_stopped_uploads_are_still_accepted_and_ingested_once_it_is_back(tmp_path, backends):
    s = Stack(tmp_path, backends, beat=True, stuck_after_s=2.0, rate_limit="1000 per minute")
    worker = s.procs["worker"]
    try:
        before = random_bytes(MiB + 1, 20)
        stored_id = s.put(before)
        web_pid = s.procs["web"].pid
        os.killpg(worker.pid, signal.SIGSTOP)  # held still: the status read below is the web's doing alone
        embedded.stop(s.redis)
        health = requests.get(s.url("/api/health"), timeout=30)
        assert health.status_code == 503 and health.headers["Retry-After"]
        assert health.json()["redis"]["ok"] is False
        during = random_bytes(2 * MiB + 5, 21)
        r = s.upload(during, "during.bin")
        assert r.status_code == 202, r.text  # the spool and MongoDB hold it; beat queues it later
        queued_id = r.json()["fileId"]
        assert s.download(stored_id).content == before  # reads need no Redis
        assert requests.get(s.url("/api/files"), timeout=30).status_code == 200
        status = requests.get(s.url(f"/api/files/{queued_id}/status"), timeout=30).json()
        assert status == {"fileId": queued_id, "status": "queued", "error": None,
                          "progress": {"chunksDone": 0, "chunksTotal": 3}}
        assert queued_id in spool_dirs(s)
        s.redis = embedded.start_redis(tmp_path / "var", s.redis_port)  # same port, same data
        os.killpg(worker.pid, signal.SIGCONT)  # the same worker reconnects; beat re-queues the file
        assert s.wait_status(queued_id, timeout=90)["status"] == "stored"
        assert s.download(queued_id).content == during
        assert requests.get(s.url("/api/health"), timeout=30).status_code == 200
        assert s.procs["web"].pid == web_pid and s.procs["web"].poll() is None
        assert s.procs["worker"] is worker and worker.poll() is None
        assert "Traceback" not in s.log("web")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGCONT)
        s.stop()


def test_mongodb_stopped_is_503_with_retry_after_and_the_same_web_recovers(tmp_path):
    """MongoDB stops in the middle of an upload: 503, its spooled bytes removed; calls while it is
    down are 503 (in auth mode auto, never served open); the same web process recovers."""
    mongo = Backends(tmp_path / "mongo")  # this test's own nx-27017: it is stopped below
    s = Stack(tmp_path / "s", mongo, worker=False)  # MINIS3_AUTH=auto, no key: checks MongoDB per call
    try:
        file_id = s.upload(b"before the outage").json()["fileId"]  # no worker: it stays spooled
        spooled = spool_dirs(s)
        web_pid = s.procs["web"].pid
        half_sent = threading.Event()
        go_on = threading.Event()

        def body():
            yield random_bytes(MiB, 22)
            half_sent.set()
            go_on.wait(60)
            yield random_bytes(MiB, 23)

        answer = {}
        upload = threading.Thread(target=lambda: answer.update(r=s.upload(chunks=body(), size=2 * MiB)))
        upload.start()
        assert half_sent.wait(30) and wait_until(lambda: len(spool_dirs(s)) > len(spooled))
        embedded.stop(mongo.mongo)
        go_on.set()
        upload.join(120)
        assert answer["r"].status_code == 503 and int(answer["r"].headers["Retry-After"]) > 0
        assert answer["r"].json()["error"]["code"] == "service_unavailable"
        assert wait_until(lambda: spool_dirs(s) == spooled), spool_dirs(s)  # its bytes went with it
        r = requests.get(s.url(f"/api/files/{file_id}/status"), timeout=60)
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
        assert r.json() == {"success": False, "error": {"code": "service_unavailable",
                                                         "message": "metadata store unavailable"}}
        mongo.mongo = embedded.start_mongo(tmp_path / "mongo" / "mongo", mongo.mongo_port)
        assert wait_until(lambda: requests.get(s.url(f"/api/files/{file_id}/status"), timeout=60)
                          .status_code == 200, timeout=30)
        assert s.upload(b"after the outage").status_code == 202
        assert s.procs["web"].pid == web_pid and s.procs["web"].poll() is None
    finally:
        s.stop()
        mongo.stop()
