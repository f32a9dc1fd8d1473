"""Scale-out, shown: two complete hosts (gunicorn, celery worker and beat each, with their own ports
and host ids) share one Redis, one MongoDB and the same spool and node directories, as hosts with
shared mounts would. Files cross hosts byte-exact, content is stored once whichever host took it,
one GC runs at a time across hosts, and a worker killed mid-ingest is replaced by the other host's."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import pytest
import requests
from bson import ObjectId

from config import embedded
from pipeline.metadata.model import CHUNK_STORED
from pipeline.metadata.repositories import Metadata
from tests.stack import BIN, ROOT, MiB, Stack, copies_on_nodes, each_once, random_bytes, random_chunks, wait_for
from workers.celery import make_celery

# short timers: beat re-queues a file idle for 3 s; GC may take a chunk 1 s after its last
# reference, but only when a test runs it (beat's own GC would race the test's runs)
TIMERS = dict(stuck_after_s=3, gc_grace_s=1, gc_interval_s=3600, gc_lock_ttl_s=30, manifest_page_size=4)


@dataclass
class Hosts:
    a: Stack
    b: Stack
    meta: Metadata

    @property
    def both(self) -> tuple[Stack, Stack]:
        return self.a, self.b

    def other(self, host: Stack) -> Stack:
        return self.b if host is self.a else self.a


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, backends):
    root = tmp_path_factory.mktemp("scaleout")
    redis_port = embedded.free_port()
    redis_proc = embedded.start_redis(root / "redis", redis_port)
    shared = dict(redis_url=f"redis://127.0.0.1:{redis_port}/0", mongo_db="s" + uuid.uuid4().hex[:12],
                  spool_dir=root / "shared/spool",
                  nodes=tuple(root / f"shared/nodes/node-{i}" for i in (1, 2, 3)), **TIMERS)
    started: list[Stack] = []
    meta = None
    try:
        for host_id in ("host-a", "host-b"):
            started.append(Stack(root / host_id, backends, beat=True, host_id=host_id, **shared))
        meta = Metadata.connect(backends.mongo_url, shared["mongo_db"])
        yield Hosts(*started, meta)
    finally:
        if meta is not None:
            meta.client.close()
        for s in started:
            s.stop()
        embedded.stop(redis_proc)


def chunk_hashes(data: bytes) -> list[str]:
    return [hashlib.sha256(data[i:i + MiB]).hexdigest() for i in range(0, len(data), MiB)]


def put(host: Stack, data: bytes, name: str) -> str:
    r = host.upload(data, name)
    assert r.status_code == 202, r.text
    return r.json()["fileId"]


def assert_reads_exactly(host: Stack, file_id: str, data: bytes) -> None:
    r = host.download(file_id)
    assert r.status_code == 200, r.text
    assert r.content == data
    assert r.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'


@pytest.fixture
def both_workers(hosts):
    """Each test starts and ends with a running worker on both hosts (the kill test holds both
    and kills one)."""
    yield hosts
    for s in hosts.both:
        worker = s.procs["worker"]
        if worker.poll() is None:
            release(worker)
        else:
            s.stop_proc("worker")
            s.start_worker()


def hold(proc: subprocess.Popen) -> None:
    """Stop a process group (celery main process and its pool) where it is."""
    os.killpg(proc.pid, signal.SIGSTOP)


def release(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGCONT)


def test_each_host_runs_its_own_worker_on_the_shared_broker(hosts):
    celery = make_celery(hosts.a.settings)
    try:
        replies = celery.control.ping(timeout=5)
    finally:
        celery.close()
    names = {name for reply in replies for name in reply}
    assert {hosts.a.worker_name, hosts.b.worker_name} <= names
    assert hosts.a.worker_name.endswith("@host-a") and hosts.b.worker_name.endswith("@host-b")
    assert hosts.a.base_url != hosts.b.base_url


def test_files_uploaded_through_either_host_read_byte_exact_through_the_other(both_workers):
    hosts = both_workers
    uploads = []
    for i, size in enumerate([1, 4096, 3 * MiB + 5, 5 * MiB, 700 * 1024]):
        host = hosts.both[i % 2]
        data = random_bytes(size, 8100 + i)
        uploads.append((host, put(host, data, f"cross-{i}.bin"), data))
    for host, file_id, data in uploads:
        other = hosts.other(host)
        assert other.wait_status(file_id)["status"] == "stored"
        assert_reads_exactly(other, file_id, data)
    for s in hosts.both:
        listed = requests.get(s.url("/api/files?limit=1000"), timeout=30).json()["files"]
        assert {file_id for _, file_id, _ in uploads} <= {f["fileId"] for f in listed}


def test_the_same_content_through_both_hosts_is_stored_once(both_workers):
    hosts = both_workers
    a, b, tail = random_bytes(MiB, 8201), random_bytes(MiB, 8202), random_bytes(MiB // 3, 8203)
    data = a + b + a + tail  # three distinct chunks, one of them twice in the file
    hashes = chunk_hashes(data)
    ids: dict[str, str] = {}

    def upload_through(host: Stack) -> None:
        ids[host.settings.host_id] = put(host, data, f"same-{host.settings.host_id}.bin")

    threads = [threading.Thread(target=upload_through, args=(s,)) for s in hosts.both]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(ids) == 2 and ids["host-a"] != ids["host-b"]

    for host in hosts.both:
        file_id = ids[host.settings.host_id]
        other = hosts.other(host)
        assert other.wait_status(file_id)["status"] == "stored"
        assert_reads_exactly(other, file_id, data)
    assert copies_on_nodes(hosts.a, hashes) == each_once(hosts.a, hashes)
    docs = list(hosts.meta.db.chunks.find({"_id": {"$in": hashes}}))
    assert len(docs) == 3 and {d["state"] for d in docs} == {CHUNK_STORED}


def minis3(host: Stack, *args: str) -> dict:
    """An operator command run on ``host`` (with its environment), its JSON answer."""
    done = subprocess.run([str(BIN / "minis3"), *args], env=host.env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


# a GC run in a process of its own, built from one host's settings as its worker builds it;
# it waits for a line on stdin so that two of them start their runs at the same moment
GC_RUN = """
import json, sys
from config.settings import Settings
from pipeline.store import ObjectStore
store = ObjectStore.from_settings(Settings.from_env())
store.prepare()
store.redis.ping()
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps(store.garbage_collector().collect()), flush=True)
"""


def test_gc_runs_once_when_both_hosts_start_it_together(both_workers):
    hosts = both_workers
    shared = random_bytes(MiB, 8301)
    # enough chunks that a run lasts about half a second: the two runs surely overlap
    dead = shared + random_bytes(128 * MiB, 8302)
    live = shared + random_bytes(MiB + 17, 8303)
    dead_only = set(chunk_hashes(dead)) - set(chunk_hashes(live))
    assert len(dead_only) == 128
    dead_id, live_id = put(hosts.a, dead, "dead.bin"), put(hosts.b, live, "live.bin")
    for file_id in (dead_id, live_id):
        assert hosts.a.wait_status(file_id)["status"] == "stored"
    assert requests.delete(hosts.b.url(f"/api/files/{dead_id}"), timeout=30).status_code == 204
    assert copies_on_nodes(hosts.a, dead_only) == each_once(hosts.a, dead_only)

    runs = [subprocess.Popen([sys.executable, "-c", GC_RUN], env=s.env, cwd=ROOT, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for s in hosts.both]
    try:
        for run in runs:
            assert run.stdout.readline().strip() == "ready", run.stderr.read()
        wait_for(lambda: minis3(hosts.a, "gc", "--dry-run", "--json")["chunks"] == len(dead_only),
                 timeout=30, interval=0.2, what="the deleted file's chunks to pass the grace period")
        started = time.time()
        for run in runs:
            run.stdin.write("go\n")
            run.stdin.flush()
        reports = []
        for run in runs:
            out, err = run.communicate(timeout=120)
            assert run.returncode == 0, err
            reports.append(json.loads(out))
    finally:
        for run in runs:
            if run.poll() is None:
                run.kill()
                run.wait()

    skipped = [r for r in reports if r["skipped_locked"]]
    worked = [r for r in reports if not r["skipped_locked"]]
    assert len(skipped) == 1 and len(worked) == 1, reports
    assert skipped[0]["chunks"] == 0 and skipped[0]["deleted"] == []
    assert worked[0]["chunks"] == len(dead_only) and worked[0]["bytes"] == len(dead_only) * MiB
    assert {c["chunk"] for c in worked[0]["deleted"]} <= dead_only  # a sample of what went
    event = hosts.meta.db.events.find_one({"_id": "gc"})
    assert event["at"] >= started and event["chunks"] == len(dead_only)

    assert copies_on_nodes(hosts.a, dead_only) == Counter()
    assert hosts.meta.db.chunks.count_documents({"_id": {"$in": sorted(dead_only)}}) == 0
    assert copies_on_nodes(hosts.a, chunk_hashes(live)) == each_once(hosts.a, chunk_hashes(live))
    for s in hosts.both:
        assert_reads_exactly(s, live_id, live)
        assert requests.get(s.url(f"/api/files/{dead_id}"), timeout=30).status_code == 404


def stream_sha256(size: int, seed: int) -> str:
    h = hashlib.sha256()
    for piece in random_chunks(size, seed):
        h.update(piece)
    return h.hexdigest()


def assert_streams_exactly(host: Stack, file_id: str, size: int, sha256: str) -> None:
    got, length = hashlib.sha256(), 0
    with requests.get(host.url(f"/api/files/{file_id}"), stream=True, timeout=600) as r:
        assert r.status_code == 200
        for piece in r.iter_content(MiB):
            got.update(piece)
            length += len(piece)
    assert length == size and got.hexdigest() == sha256


def test_a_worker_killed_mid_ingest_is_replaced_by_the_other_hosts_worker(both_workers):
    hosts = both_workers
    size, seed = 200 * MiB, 8401
    hashes = [hashlib.sha256(piece).hexdigest() for piece in random_chunks(size, seed)]
    seen = {s.settings.host_id: len(s.log("worker")) for s in hosts.both}
    workers = [s.procs["worker"] for s in hosts.both]

    # both workers held while host A takes the upload, so that the test sees its ingest start
    for w in workers:
        hold(w)
    try:
        r = hosts.a.upload(size=size, chunks=random_chunks(size, seed), name="big.bin")
    finally:
        for w in workers:
            release(w)
    assert r.status_code == 202, r.text
    file_id = r.json()["fileId"]
    oid = ObjectId(file_id)
    wait_for(lambda: (d := hosts.meta.db.files.find_one({"_id": oid})) and d.get("chunksDone", 0) > 0,
             timeout=60, interval=0.001, what="ingest to start")
    for w in workers:
        hold(w)  # whichever worker took the file stops mid-ingest
    doc = hosts.meta.db.files.find_one({"_id": oid})
    assert doc["status"] == "processing" and 0 < doc["chunksDone"] < len(hashes), doc

    took = [s for s in hosts.both if "Task minis3.ingest[" in s.log("worker")[seen[s.settings.host_id]:]]
    assert len(took) == 1, "exactly one worker received the ingest"
    victim, survivor = took[0], hosts.other(took[0])
    os.killpg(victim.procs["worker"].pid, signal.SIGKILL)
    victim.procs["worker"].wait(10)
    release(survivor.procs["worker"])

    assert hosts.meta.db.files.find_one({"_id": oid})["status"] == "processing"
    placed = sum(copies_on_nodes(survivor, hashes).values())
    assert 0 < placed < sum(each_once(survivor, hashes).values())  # killed with part of the file on the nodes

    # beat re-queues the idle file; the only live worker is the other host's
    status = survivor.wait_status(file_id, timeout=180)
    assert status["status"] == "stored", status
    assert status["progress"] == {"chunksDone": 200, "chunksTotal": 200}
    finished = survivor.log("worker")[seen[survivor.settings.host_id]:]
    assert re.search(rf"ingest {file_id} request=\S+ status=stored chunks=200 ", finished), finished[-3000:]
    sha256 = stream_sha256(size, seed)
    for s in hosts.both:
        assert_streams_exactly(s, file_id, size, sha256)
    assert copies_on_nodes(survivor, hashes) == each_once(survivor, hashes)  # no fragment stored twice
    docs = list(hosts.meta.db.chunks.find({"_id": {"$in": hashes}}))
    assert len(docs) == 200 and {d["state"] for d in docs} == {CHUNK_STORED}
    assert not (survivor.settings.spool_dir / file_id).exists()
    # the killed worker may have left half-written fragments in a node's temporaries: GC sweeps
    # those older than the grace period, after which fsck finds nothing out of place
    collected = subprocess.run([str(BIN / "minis3"), "gc", "--json"], env=survivor.env, cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
    assert collected.returncode == 0, collected.stdout + collected.stderr
    assert not any(True for node in survivor.settings.nodes for _ in (Path(node) / ".tmp").glob("*"))
    checked = subprocess.run([str(BIN / "minis3"), "fsck"], env=survivor.env, cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "clean" in checked.stdout
