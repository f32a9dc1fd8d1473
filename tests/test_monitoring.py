"""Monitoring over real processes: /api/stats and `minis3 stats`, /metrics summed across the
gunicorn workers and the celery worker, request ids in the logs, and Flower's view of the tasks."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from config import embedded
from pipeline.errors import ServiceUnavailable
from tests.stack import BIN, MiB, Stack, random_bytes, wait_for
from workers.celery import make_celery, queue_depth_reader

CHECKSUM_MISMATCH = "content does not match its checksum"


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, backends):
    """A stack with Flower beside it, whose API is open on loopback for the test."""
    s = Stack(tmp_path_factory.mktemp("monitored"), backends, gc_grace_s=0)
    s.flower_port = embedded.free_port()
    s.env["FLOWER_UNAUTHENTICATED_API"] = "true"
    flower = s.start("flower", [str(BIN / "celery"), "-A", "workers.app", "flower", "--address=127.0.0.1",
                                f"--port={s.flower_port}"])
    embedded.wait_for_port(s.flower_port, timeout=60, proc=flower)
    yield s
    s.stop()


def scrape(stack: Stack) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}; fails if the text does not parse."""
    r = requests.get(stack.url("/metrics"), timeout=30)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def series(name: str, **labels) -> tuple[str, tuple]:
    return name, tuple(sorted(labels.items()))


def moved(before: dict, after: dict, key: tuple[str, tuple]) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def scrape_after(stack: Stack, before: dict, *keys: tuple[str, tuple], at_least: float = 1) -> dict:
    """Scrape until each series moved by ``at_least`` since ``before``: a request is accounted once
    its last byte has gone, which may be just after the client has it."""
    return wait_for(lambda: (s := scrape(stack)) and all(moved(before, s, k) >= at_least for k in keys) and s,
                    timeout=30, what=f"metrics {keys}")


def run_gc_task(stack: Stack) -> None:
    make_celery(stack.settings).send_task("minis3.gc", retry=False)


# --- /api/stats and `minis3 stats` ----------------------------------------------------------

def test_stats_figures_match_what_was_uploaded_deduplicated_and_collected(tmp_path, backends):
    stack = Stack(tmp_path / "stats", backends, gc_grace_s=0)
    try:
        a = random_bytes(3 * MiB + 5, 6001)  # 4 chunks
        b = a[:MiB] + random_bytes(MiB, 6002)  # shares a's first chunk, adds one
        ids = [stack.put(a, "a.bin"), stack.put(a, "a-again.bin"), stack.put(b, "b.bin")]

        r = requests.get(stack.url("/api/stats"), timeout=30)
        assert r.status_code == 200
        stats = r.json()
        assert stats["success"] is True
        assert stats["files"] == {"total": 3, "byStatus": {"queued": 0, "processing": 0, "stored": 3,
                                                           "failed": 0, "deleted": 0}}
        assert stats["logicalBytes"] == 2 * len(a) + len(b)
        k, m = stack.settings.ec_layout
        assert stats["physicalBytes"] == sum(stack.chunk_files().values())  # every fragment's bytes
        assert len(a) + MiB <= stats["physicalBytes"] <= (len(a) + MiB) * (k + m) / k + 5 * (k + m) * 100
        assert stats["chunks"] == 5 and stats["fragments"] == 5 * (k + m) == len(stack.chunk_files())
        assert stats["dedupRatio"] == round((2 * len(a) + len(b)) / (len(a) + MiB), 4)
        on_disk: dict[str, list[int]] = {}
        for path, size in stack.chunk_files().items():
            on_disk.setdefault(Path(path).parts[-4], []).append(size)
        assert [{k: node[k] for k in ("node", "chunks", "bytes")} for node in stats["nodes"]] == \
            [{"node": n, "chunks": len(on_disk.get(n, [])), "bytes": sum(on_disk.get(n, []))}
             for n in ("node-1", "node-2", "node-3")]
        assert all(0 < node["freeBytes"] <= node["totalBytes"] for node in stats["nodes"])
        assert stats["queueDepth"] == 0
        assert stats["lastGc"] is None

        # b's own chunk goes with b; the CLI runs GC and then reports what it freed
        assert requests.delete(stack.url(f"/api/files/{ids[2]}"), timeout=30).status_code == 204
        env = stack.env
        gc = subprocess.run([str(BIN / "minis3"), "gc"], env=env, capture_output=True, text=True, timeout=120)
        assert gc.returncode == 0, gc.stderr
        cli = subprocess.run([str(BIN / "minis3"), "stats"], env=env, capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr
        after = json.loads(cli.stdout)
        assert after["files"]["byStatus"]["stored"] == 2 and after["files"]["byStatus"]["deleted"] == 1
        assert after["logicalBytes"] == 2 * len(a)
        assert after["physicalBytes"] == sum(stack.chunk_files().values()) and after["chunks"] == 4
        assert after["lastGc"]["chunksFreed"] == 1 and after["lastGc"]["bytesFreed"] == MiB
        gc_at = datetime.fromisoformat(after["lastGc"]["at"].replace("Z", "+00:00"))  # ISO 8601 UTC
        assert after["lastGc"]["at"].endswith("Z") and abs(gc_at.timestamp() - time.time()) < 120
        api_after = requests.get(stack.url("/api/stats"), timeout=30).json()

        def fixed(figures):  # free space moves with anything on the machine writing to that disk
            return {**figures, "nodes": [{k: v for k, v in n.items() if k != "freeBytes"} for n in figures["nodes"]]}

        # the CLI has no caller: the API adds whose view it is (tenant) and that tenant's usage
        assert fixed({k: v for k, v in api_after.items() if k not in ("success", "tenant", "usage")}) == fixed(after)
    finally:
        stack.stop()


def test_minis3_stats_finds_the_services_minis3_run_started(tmp_path):
    port = embedded.free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MINIS3_REDIS_URL", "MINIS3_MONGO_URL")}
    env.update(MINIS3_VAR_DIR=str(tmp_path / "var"), MINIS3_SPOOL_DIR=str(tmp_path / "spool"),
               MINIS3_NODES=f"{tmp_path}/nodes/a,{tmp_path}/nodes/b,{tmp_path}/nodes/c", MINIS3_PORT=str(port),
               MINIS3_RATE_LIMIT="", PYTHONUNBUFFERED="1")
    published = tmp_path / "var" / embedded.URLS_FILE
    with open(tmp_path / "run.log", "wb") as out:
        run = subprocess.Popen([str(BIN / "minis3"), "run", "--no-flower"], env=env, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        embedded.wait_for_port(port, timeout=90, proc=run)
        data = random_bytes(5000, 6050)
        r = requests.post(f"http://127.0.0.1:{port}/api/upload?wait=1", files={"file": ("s.bin", data)}, timeout=60)
        assert r.status_code == 201, r.text
        assert published.exists()
        cli = subprocess.run([str(BIN / "minis3"), "stats"], env=env, capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stderr
        stats = json.loads(cli.stdout)
        assert stats["files"]["byStatus"]["stored"] == 1 and stats["logicalBytes"] == len(data)
        assert [n["node"] for n in stats["nodes"]] == ["a", "b", "c"]
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(60)
    assert not published.exists()
    cli = subprocess.run([str(BIN / "minis3"), "stats"], env=env, capture_output=True, text=True, timeout=60)
    assert cli.returncode != 0
    assert "MINIS3_MONGO_URL" in cli.stderr and "Traceback" not in cli.stderr


def test_stats_counts_uploads_waiting_in_the_queue(tmp_path, backends):
    stack = Stack(tmp_path / "queue", backends, worker=False)
    try:
        for seed in (6101, 6102):
            assert stack.upload(random_bytes(1000, seed)).status_code == 202
        stats = requests.get(stack.url("/api/stats"), timeout=30).json()
        assert stats["queueDepth"] == 2
        assert stats["files"]["byStatus"]["queued"] == 2
        assert scrape(stack).get(series("minis3_ingest_queue_depth")) == 2
    finally:
        stack.stop()


def test_queue_depth_is_asked_through_celery_for_any_queue(settings):
    celery = make_celery(settings)
    queue = "depth-" + uuid.uuid4().hex[:8]
    depth = queue_depth_reader(celery, queue)
    assert depth() == 0  # a queue nothing was ever sent to is empty, not an error
    for n in range(3):
        celery.send_task("minis3.ingest", args=[f"not-a-file-{n}"], queue=queue, retry=False)
    try:
        assert depth() == 3
    finally:
        with celery.connection_for_write() as conn:
            conn.default_channel.queue_purge(queue)
    assert depth() == 0


def test_queue_depth_with_the_broker_down_is_service_unavailable_at_once(settings):
    down = settings.with_overrides(redis_url=f"redis://127.0.0.1:{embedded.free_port()}/0")
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        queue_depth_reader(make_celery(down))()
    assert time.monotonic() - started < 10  # no retrying for ever while a stats call waits


# --- /metrics ---------------------------------------------------------------------------------

def test_metrics_count_requests_across_every_web_worker(monitored):
    before = scrape(monitored)
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: requests.get(monitored.url("/api/health"), timeout=30).status_code,
                              range(40)))
    assert codes == [200] * 40
    count = series("minis3_http_requests_total", method="GET", route="/api/health", status="200")
    timed = series("minis3_http_request_duration_seconds_count", method="GET", route="/api/health", status="200")
    after = scrape_after(monitored, before, count, timed, at_least=40)
    assert moved(before, after, count) == 40
    assert moved(before, after, timed) == 40
    web_files = {p.name for p in monitored.metrics_dir.glob("counter_*.db")}
    assert len(web_files) >= 2  # the web and worker processes each keep their own file


def test_metrics_move_with_uploads_dedup_ingest_and_downloads(monitored):
    data = random_bytes(2 * MiB + 7, 6201)  # 3 chunks
    before = scrape(monitored)
    first = monitored.put(data)
    second = monitored.put(data, "again.bin")
    assert monitored.download(first).content == data
    downloads = series("minis3_http_requests_total", method="GET", route="/api/files/<file_id>", status="200")
    ingests = series("minis3_ingests_total", status="stored")
    after = scrape_after(monitored, before, ingests, at_least=2)
    after = scrape_after(monitored, before, downloads)

    def delta(name, **labels):
        return moved(before, after, series(name, **labels))

    assert delta("minis3_http_requests_total", method="POST", route="/api/upload", status="202") == 2
    assert moved(before, after, downloads) == 1
    assert delta("minis3_upload_bytes_total") == 2 * len(data)
    assert delta("minis3_download_bytes_total") == len(data)
    assert moved(before, after, ingests) == 2
    assert delta("minis3_ingest_chunks_total", result="stored") == 3
    assert delta("minis3_ingest_chunks_total", result="deduplicated") == 3
    assert delta("minis3_ingest_bytes_written_total") == len(data)
    assert delta("minis3_ingest_duration_seconds_count") == 2
    assert series("minis3_ingest_queue_depth") in after
    listed = {f["fileId"]: f["name"] for f in requests.get(monitored.url("/api/files?limit=1000"), timeout=30)
              .json()["files"]}
    assert (listed.get(first), listed.get(second)) == ("blob.bin", "again.bin")  # two files were made


def test_metrics_count_hash_mismatches_seen_on_read(monitored):
    data = random_bytes(2 * MiB, 6301)
    file_id = monitored.put(data)
    chunk_hash = hashlib.sha256(data[MiB:]).hexdigest()
    k, m = monitored.settings.ec_layout
    # more damage than the layout survives: m + 1 of the chunk's files
    for path in sorted(Path(p) for p in monitored.chunk_files() if Path(p).name.partition(".")[0] == chunk_hash)[:m + 1]:
        raw = bytearray(path.read_bytes())
        raw[100] ^= 0x80
        path.write_bytes(bytes(raw))
    before = scrape(monitored)
    received = b""
    with pytest.raises(requests.exceptions.RequestException):
        with requests.get(monitored.url(f"/api/files/{file_id}"), stream=True, timeout=60) as r:
            for piece in r.iter_content(65536):
                received += piece
    assert received == data[:len(received)] and len(received) < len(data)
    mismatches = series("minis3_read_chunk_failures_total", reason=CHECKSUM_MISMATCH)
    after = scrape_after(monitored, before, mismatches)
    assert moved(before, after, mismatches) == 1


def test_metrics_count_gc_deletions_and_flower_shows_ingest_and_gc(monitored):
    keep = random_bytes(MiB, 6401)
    doomed_id = monitored.put(keep + random_bytes(MiB, 6402))
    monitored.put(keep)
    before = scrape(monitored)
    assert requests.delete(monitored.url(f"/api/files/{doomed_id}"), timeout=30).status_code == 204
    run_gc_task(monitored)
    deleted = series("minis3_gc_deleted_chunks_total")
    after = scrape_after(monitored, before, deleted)
    # only the deleted file's own chunk goes: every other chunk here is still referenced
    assert moved(before, after, deleted) == 1
    assert moved(before, after, series("minis3_gc_deleted_bytes_total")) == MiB

    def flower_tasks():
        r = requests.get(f"http://127.0.0.1:{monitored.flower_port}/api/tasks", timeout=10)
        return r.json() if r.status_code == 200 else {}

    tasks = wait_for(lambda: (t := flower_tasks()) and any(v.get("name") == "minis3.gc" for v in t.values())
                     and t, what="Flower to see the GC task")
    ingests = [v for v in tasks.values() if v.get("name") == "minis3.ingest"]
    assert any(doomed_id in (v.get("args") or "") and v.get("state") == "SUCCESS" for v in ingests)


# --- request ids in logs --------------------------------------------------------------------

def test_request_id_is_in_the_header_the_access_line_and_the_ingest_log(monitored):
    rid = "monitor-" + hashlib.sha1(b"6501").hexdigest()[:12]
    r = monitored.upload(random_bytes(MiB + 3, 6501), headers={"X-Request-ID": rid})
    assert r.status_code == 202
    assert r.headers["X-Request-ID"] == rid
    file_id = r.json()["fileId"]
    assert monitored.wait_status(file_id)["status"] == "stored"
    web_line = wait_for(lambda: next((line for line in monitored.log("web").splitlines()
                                      if f"rid={rid}" in line and "POST /api/upload 202" in line), None),
                        what="the access line")
    assert re.search(rf"POST /api/upload 202 in={r.request.headers['Content-Length']} out=\d+ [0-9.]+ms$", web_line)
    worker_line = wait_for(lambda: next((line for line in monitored.log("worker").splitlines()
                                         if f"ingest {file_id}" in line), None), what="the ingest line")
    assert f"rid={rid}" in worker_line
    generated = requests.get(monitored.url("/api/health"), timeout=30).headers["X-Request-ID"]
    assert len(generated) == 32
    wait_for(lambda: any(f"rid={generated}" in line and "GET /api/health 200 in=0 out=" in line
                         for line in monitored.log("web").splitlines()), what="the health access line")
