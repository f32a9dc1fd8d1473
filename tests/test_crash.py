"""Crash safety with real processes and real kill -9: worker, web and Redis die mid-flight, and
beat's re-queue, spool clean-up and GC (on short timers here) finish or clean what they left."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from bson import ObjectId

from config import embedded
from config.settings import Settings
from pipeline.metadata.model import CHUNK_STORED
from pipeline.metadata.repositories import Metadata
from pipeline.storage.chunkio import nodes_of
from tests.stack import BIN, ROOT, MiB, Stack, copies_on_nodes, each_once, random_bytes, random_chunks, wait_for
from workers.celery import make_celery


# beat's re-queue, spool clean-up and GC on short timers
CRASH_TIMERS = dict(beat=True, gc_interval_s=1, gc_grace_s=2, stuck_after_s=2, spool_abandon_s=2, gc_lock_ttl_s=3,
                    manifest_page_size=4)


@pytest.fixture(scope="module")
def crash_stack(tmp_path_factory, backends):
    s = Stack(tmp_path_factory.mktemp("crash"), backends, **CRASH_TIMERS)
    yield s
    s.stop()


@contextmanager
def metadata_of(stack: Stack):
    r = Metadata.connect(stack.settings.mongo_url, stack.settings.mongo_db)
    try:
        yield r
    finally:
        r.client.close()


@pytest.fixture(scope="module")
def meta(crash_stack):
    with metadata_of(crash_stack) as r:
        yield r


@contextmanager
def paused(proc: subprocess.Popen):
    """Hold a process group (celery main process and its pool) still, then let it go on."""
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGCONT)


def kill9(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def chunk_hashes(size: int, seed: int) -> list[str]:
    return [hashlib.sha256(piece).hexdigest() for piece in random_chunks(size, seed)]


def upload_held(s: Stack, size: int, seed: int) -> str:
    """Upload while the worker is held, so that the test sees its ingest from the first page."""
    with paused(s.procs["worker"]):
        r = s.upload(size=size, chunks=random_chunks(size, seed), name=f"seed-{seed}.bin")
    assert r.status_code == 202, r.text
    return r.json()["fileId"]


def wait_mid_ingest(meta: Metadata, file_id: str, chunk_count: int) -> dict:
    oid = ObjectId(file_id)
    doc = wait_for(lambda: (d := meta.db.files.find_one({"_id": oid})) and d.get("chunksDone", 0) > 0 and d,
                   timeout=60, interval=0.001, what="ingest to start")
    assert doc["status"] == "processing" and doc["chunksDone"] < chunk_count, doc
    return doc


def assert_downloads_exactly(s: Stack, file_id: str, size: int, seed: int) -> None:
    expected = hashlib.sha256()
    for piece in random_chunks(size, seed):
        expected.update(piece)
    got = hashlib.sha256()
    length = 0
    with requests.get(s.url(f"/api/files/{file_id}"), stream=True, timeout=600) as r:
        assert r.status_code == 200
        for piece in r.iter_content(MiB):
            got.update(piece)
            length += len(piece)
    assert length == size and got.hexdigest() == expected.hexdigest()


K, M = Settings().ec_layout


def temporaries(s: Stack) -> list[Path]:
    return [p for node in s.settings.nodes for p in (Path(node) / ".tmp").glob("*")]


def fsck(s: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "minis3"), "fsck", *args], env=s.env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def task_done(s: Stack, task_id: str) -> bool:
    return f"[{task_id}] succeeded" in s.log("worker")


def test_worker_killed_mid_ingest_then_a_new_worker_finishes_it_byte_exact(crash_stack, meta):
    s, size, seed = crash_stack, 200 * MiB, 7001
    hashes = chunk_hashes(size, seed)
    file_id = upload_held(s, size, seed)
    wait_mid_ingest(meta, file_id, len(hashes))
    kill9(s.procs["worker"])

    doc = meta.db.files.find_one({"_id": ObjectId(file_id)})
    assert doc["status"] == "processing"
    placed = sum(copies_on_nodes(s, hashes).values())
    assert 0 < placed < len(hashes) * (K + M)  # killed with part of the file on the nodes

    s.start_worker()  # beat re-queues the stuck file for it
    status = s.wait_status(file_id, timeout=180)
    assert status["status"] == "stored", status
    assert status["progress"] == {"chunksDone": 200, "chunksTotal": 200}
    assert_downloads_exactly(s, file_id, size, seed)
    assert copies_on_nodes(s, hashes) == each_once(s, hashes)  # no fragment orphaned or stored twice
    docs = list(meta.db.chunks.find({"_id": {"$in": hashes}}))
    assert len(docs) == 200 and {d["state"] for d in docs} == {CHUNK_STORED}
    assert all(len(d["frags"]) == K + M and "needsHeal" not in d for d in docs)
    assert not (s.settings.spool_dir / file_id).exists()
    # what the killed worker was writing stays under .tmp until GC sweeps it after the grace period
    wait_for(lambda: not temporaries(s), what="GC to sweep the killed writes")
    checked = fsck(s)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "clean" in checked.stdout


def test_web_killed_mid_upload_never_stores_the_file_and_its_spool_is_cleaned(crash_stack, meta):
    s = crash_stack
    spool = s.settings.spool_dir
    before = set(os.listdir(spool))
    gate = threading.Event()
    outcome: list = []

    def body():
        # spooled chunks reach the manifest a few chunks behind the stream (after their fdatasync)
        yield from random_chunks(16 * MiB, 7002)
        gate.wait(60)
        yield from random_chunks(8 * MiB, 7003)

    def client():
        try:
            outcome.append(s.upload(size=24 * MiB, chunks=body()).status_code)
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    upload = wait_for(lambda: next(iter(set(os.listdir(spool)) - before), None), what="spool directory")
    wait_for(lambda: meta.db.manifests.count_documents({"file": upload}) > 0, what="first manifest page")
    kill9(s.procs["web"])
    gate.set()
    thread.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], requests.RequestException)

    s.start_web()
    seen: list = []

    def cleaned() -> bool:
        seen.append(meta.db.files.find_one({"_id": ObjectId(upload)}))
        return not (spool / upload).exists() and meta.db.manifests.count_documents({"file": upload}) == 0

    wait_for(cleaned, timeout=60, interval=0.2, what="the abandoned spool to be cleaned")
    assert seen and all(doc is None for doc in seen)  # never recorded, let alone stored
    listed = requests.get(s.url("/api/files?limit=1000"), timeout=30).json()["files"]
    assert upload not in {f["fileId"] for f in listed}
    assert requests.get(s.url(f"/api/files/{upload}/status"), timeout=30).status_code == 404


def snapshot(s: Stack, meta: Metadata, hashes: list[str]):
    files = sorted((Path(p).parts[-4], Path(p).name, n) for p, n in s.chunk_files().items()
                   if Path(p).name.partition(".")[0] in set(hashes))
    docs = sorted((d["_id"], nodes_of(d)[0], d["size"], d["state"])
                  for d in meta.db.chunks.find({"_id": {"$in": hashes}}))
    return files, docs


def test_ingest_and_gc_delivered_twice_end_as_if_run_once(crash_stack, meta):
    s, celery = crash_stack, make_celery(crash_stack.settings)
    data = random_bytes(6 * MiB + 3, 7005)
    hashes = [hashlib.sha256(data[i:i + MiB]).hexdigest() for i in range(0, len(data), MiB)]
    with paused(s.procs["worker"]):
        r = s.upload(data)
        file_id = r.json()["fileId"]
        celery.send_task("minis3.ingest", args=[file_id])  # redelivered after a lost ack
        celery.send_task("minis3.ingest", args=[file_id])  # and retried
    assert s.wait_status(file_id)["status"] == "stored"
    once = snapshot(s, meta, hashes)
    assert len(once[0]) == 7 * (K + M) and len(once[1]) == 7 and {d[3] for d in once[1]} == {CHUNK_STORED}

    again = celery.send_task("minis3.ingest", args=[file_id])
    wait_for(lambda: task_done(s, again.id), what="the repeated ingest")
    assert snapshot(s, meta, hashes) == once
    assert s.download(file_id).content == data

    assert requests.delete(s.url(f"/api/files/{file_id}"), timeout=30).status_code == 204
    wait_for(lambda: snapshot(s, meta, hashes) == ([], []), what="beat's GC to take the chunks")
    runs = [celery.send_task("minis3.gc") for _ in range(2)]
    wait_for(lambda: all(task_done(s, run.id) for run in runs), what="two more GC runs")
    assert snapshot(s, meta, hashes) == ([], [])
    assert fsck(s).returncode == 0


def test_redis_restarted_during_ingest_the_upload_still_completes(tmp_path, backends):
    # its own stack and Redis: a GC lock whose release was not yet in Redis's append-only file comes
    # back with the restart and holds GC off until it expires, which no other test should meet
    s, size, seed = Stack(tmp_path, backends, **CRASH_TIMERS), 24 * MiB, 7004
    try:
        with metadata_of(s) as meta:
            file_id = upload_held(s, size, seed)
            wait_mid_ingest(meta, file_id, 24)
        log_seen = len(s.log("worker"))
        kill9(s.redis)
        # the worker notices the outage before Redis is back
        wait_for(lambda: "Connection to broker lost" in s.log("worker")[log_seen:], timeout=30,
                 what="the worker to see Redis go")
        s.redis = embedded.start_redis(s.root / "var", s.redis_port)
        status = s.wait_status(file_id, timeout=180)
        assert status["status"] == "stored", status
        assert_downloads_exactly(s, file_id, size, seed)
        assert copies_on_nodes(s, chunk_hashes(size, seed)) == each_once(s, chunk_hashes(size, seed))
        checked = fsck(s)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    finally:
        s.stop()
