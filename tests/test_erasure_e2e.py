"""Erasure coding end to end: gunicorn, celery worker and beat as real processes, node directories
removed, damaged and drained under them, and the operator commands run as a user would."""
from __future__ import annotations

import hashlib
import itertools
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import requests
import xxhash

from pipeline.metadata.repositories import Metadata
from pipeline.storage.chunkio import fragment_name, fragments, layout
from tests.stack import BIN, ROOT, MiB, Stack, random_bytes, wait_for


def minis3(s: Stack, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "minis3"), *args], env=s.env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def repo_of():
    repos = []

    def connect(s: Stack) -> Metadata:
        r = Metadata.connect(s.settings.mongo_url, s.settings.mongo_db)
        repos.append(r)
        return r

    yield connect
    for r in repos:
        r.client.close()


def node_dirs(root: Path, count: int) -> tuple[Path, ...]:
    return tuple(root / f"nodes/node-{i}" for i in range(1, count + 1))


def put_files(s: Stack, sizes: list[int], seed: int) -> dict[str, bytes]:
    out = {}
    for i, size in enumerate(sizes):
        data = random_bytes(size, seed + i)
        out[s.put(data, f"f{i}.bin")] = data
    return out


def assert_all_exact(s: Stack, files: dict[str, bytes]) -> None:
    for file_id, data in files.items():
        r = s.download(file_id)
        assert r.status_code == 200 and hashlib.sha256(r.content).digest() == hashlib.sha256(data).digest()


def fragment_files(s: Stack) -> list[Path]:
    return [Path(p) for p in s.chunk_files()]


def test_two_plus_one_loses_a_node_reads_degraded_then_heal_restores_everything(tmp_path, backends, repo_of):
    s = Stack(tmp_path, backends)
    try:
        assert s.settings.ec == "2+1"
        files = put_files(s, [5 * MiB + 17, 3 * MiB, 1], 4100)
        meta = repo_of(s)
        count = meta.db.chunks.count_documents({})
        node = Path(s.settings.nodes[1])
        shutil.rmtree(node)
        assert_all_exact(s, files)
        health = requests.get(s.url("/api/health"), timeout=30)
        assert health.status_code == 503
        states = {n["node"]: n["state"] for n in health.json()["nodes"]}
        assert states == {"node-1": "up", "node-2": "down", "node-3": "up"}
        assert "stored with 2 of 3 fragments" in health.json()["layout"]["reason"]  # ingest goes on
        assert health.json()["chunks"]["degraded"] >= 1  # reads flagged what they read around
        assert not node.exists()  # neither reads nor heal tasks re-create a lost node

        node.mkdir()  # a new, empty disk in its place
        healed = minis3(s, "heal", "--json")
        assert healed.returncode == 0, healed.stdout + healed.stderr
        assert '"lost": 0' in healed.stdout
        assert len(list(node.glob("??/??/*"))) == count  # one fragment of every chunk back on it
        checked = minis3(s, "fsck")
        assert checked.returncode == 0 and "clean" in checked.stdout, checked.stdout
        assert requests.get(s.url("/api/health"), timeout=30).json()["chunks"]["degraded"] == 0
        assert_all_exact(s, files)
        assert s.wait_status(s.upload(b"after" * 1000).json()["fileId"])["status"] == "stored"
    finally:
        s.stop()


def test_four_plus_two_over_six_nodes_loses_any_two(tmp_path, backends):
    s = Stack(tmp_path, backends, nodes=node_dirs(tmp_path, 6), ec="4+2")
    try:
        files = put_files(s, [9 * MiB + 5, 2 * MiB], 4200)
        hashes = {hashlib.sha256(data[at:at + MiB]).hexdigest()
                  for data in files.values() for at in range(0, len(data), MiB)}
        # the 4+2 layout: six fragments of each chunk, one on each of the six nodes
        placed = {}
        for p in fragment_files(s):
            placed.setdefault(p.name.partition(".")[0], []).append((p.name.partition(".")[2], p.parent.parent.parent))
        assert set(placed) == hashes
        for where in placed.values():
            assert sorted(i for i, _ in where) == [str(i) for i in range(6)]
            assert len({node for _, node in where}) == 6
        for lost in itertools.combinations(range(6), 2):  # every pair of the 15
            aside = []
            for i in lost:
                node = Path(s.settings.nodes[i])
                aside.append((node.rename(node.with_name(node.name + ".away")), node))
            assert_all_exact(s, files)
            for moved, node in aside:
                moved.rename(node)
    finally:
        s.stop()


def flip(path: Path, at: int = 1000) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x40
    path.write_bytes(bytes(raw))


def test_flipped_data_and_parity_fragments_read_exact_end_in_quarantine_and_are_rewritten(tmp_path, backends,
                                                                                         repo_of):
    s = Stack(tmp_path, backends)
    try:
        data = random_bytes(4 * MiB, 4300)
        file_id = s.put(data)
        meta = repo_of(s)
        hashes = [hashlib.sha256(data[i:i + MiB]).hexdigest() for i in range(0, len(data), MiB)]
        victims = {hashes[0]: 1, hashes[2]: 2}  # a data fragment of one chunk, the parity of another
        docs = {h: meta.db.chunks.find_one({"_id": h}) for h in victims}
        paths = {}
        for h, i in victims.items():
            frag = next(f for f in fragments(docs[h]) if f["i"] == i)
            paths[h] = Path(s.settings.nodes[int(frag["node"][-1]) - 1]) / h[:2] / h[2:4] / fragment_name(h, i, 2, 1)
            flip(paths[h])
        assert s.download(file_id).content == data
        scrubbed = minis3(s, "scrub", "--now", "--json")
        assert scrubbed.returncode == 1  # it found damage (and queued heals)
        for h, i in victims.items():
            frag = next(f for f in fragments(docs[h]) if f["i"] == i)
            quarantine = Path(s.settings.nodes[int(frag["node"][-1]) - 1]) / ".quarantine"
            assert [q for q in quarantine.glob(f"{h}.{i}.*")]
            # the worker's heal task rewrites it, with the checksum the document records
            wait_for(lambda p=paths[h], x=frag["xxh3"]: p.exists() and xxhash.xxh3_128_hexdigest(p.read_bytes()) == x,
                     what=f"heal of {h[:12]}.{i}")
        checked = minis3(s, "fsck")
        assert checked.returncode == 0, checked.stdout
        assert s.download(file_id).content == data
    finally:
        s.stop()


def test_beat_scrub_finds_an_injected_corruption_within_one_pass_and_heals_it(tmp_path, backends, repo_of):
    s = Stack(tmp_path, backends, beat=True, scrub_period_s=2)
    try:
        data = random_bytes(3 * MiB, 4400)
        file_id = s.put(data)
        meta = repo_of(s)
        h = hashlib.sha256(data[MiB:2 * MiB]).hexdigest()
        frag = next(f for f in fragments(meta.db.chunks.find_one({"_id": h})) if f["i"] == 2)
        node = Path(s.settings.nodes[int(frag["node"][-1]) - 1])
        path = node / h[:2] / h[2:4] / f"{h}.2"
        flip(path, 77)
        wait_for(lambda: list((node / ".quarantine").glob(f"{h}.2.*")), timeout=90, what="scrub to quarantine it")
        wait_for(lambda: path.exists() and xxhash.xxh3_128_hexdigest(path.read_bytes()) == frag["xxh3"],
                 timeout=90, what="the heal")
        stats = requests.get(s.url("/api/stats"), timeout=30).json()
        assert stats["fragmentsHealed"] >= 1 and stats["scrub"] is not None
        wait_for(lambda: (requests.get(s.url("/api/stats"), timeout=30).json()["scrub"]["lastPass"] or {})
                 .get("corrupt", 0) >= 1 or meta.operations.last_event("scrub")["pass"].get("corrupt", 0) >= 1,
                 timeout=30, what="the scrub's findings in stats")
        metrics = requests.get(s.url("/metrics"), timeout=30).text
        assert "minis3_degraded_chunks" in metrics
        assert s.download(file_id).content == data
    finally:
        s.stop()


def test_drain_under_concurrent_uploads_and_downloads_empties_the_node(tmp_path, backends, repo_of):
    s = Stack(tmp_path, backends, nodes=node_dirs(tmp_path, 4))
    try:
        files = put_files(s, [3 * MiB] * 4, 4500)
        drained = Path(s.settings.nodes[3])
        assert list(drained.glob("??/??/*"))
        errors: list = []
        added: dict[str, bytes] = {}
        stop = threading.Event()

        def load(seed: int) -> None:
            n = 0
            while not stop.is_set():
                try:
                    data = random_bytes(MiB + 7 * n, seed + n)
                    added[s.put(data, f"load{seed}-{n}.bin")] = data
                    for file_id, expected in list(files.items()):
                        got = s.download(file_id)
                        if got.status_code != 200 or got.content != expected:
                            errors.append((file_id, got.status_code))
                except Exception as exc:  # noqa: BLE001 - every failure is a finding here
                    errors.append(repr(exc))
                n += 1

        threads = [threading.Thread(target=load, args=(4600 + 100 * i,)) for i in range(2)]
        for t in threads:
            t.start()
        try:
            out = minis3(s, "nodes", "drain", "node-4", "--json")
        finally:
            stop.set()
            for t in threads:
                t.join(120)
        assert out.returncode == 0, out.stdout + out.stderr
        assert errors == []
        again = minis3(s, "nodes", "drain", "node-4")  # resumable: whatever arrived meanwhile
        assert again.returncode == 0, again.stdout
        assert not list(drained.glob("??/??/*"))
        listing = minis3(s, "nodes")
        assert "node-4" in listing.stdout and "draining" in listing.stdout
        assert added
        assert_all_exact(s, {**files, **added})
        checked = minis3(s, "fsck")
        assert checked.returncode == 0, checked.stdout
    finally:
        s.stop()


def test_mixed_store_reads_both_layouts_and_ec_convert_re_encodes_the_old_chunks(tmp_path, backends, repo_of):
    s = Stack(tmp_path, backends, ec="1+0")
    try:
        old = put_files(s, [4 * MiB + 1], 4700)
        s.stop_proc("web")
        s.stop_proc("worker")
        s.settings = s.settings.with_overrides(ec="2+1")
        s.env = {**s.env, "MINIS3_EC": "2+1"}
        s.start_worker()
        s.start_web()
        new = put_files(s, [3 * MiB], 4710)
        meta = repo_of(s)
        assert sorted(layout(d) for d in meta.db.chunks.find({})) == [(1, 0)] * 5 + [(2, 1)] * 3
        assert_all_exact(s, {**old, **new})
        converted = minis3(s, "ec", "convert", "--wait", "--json")
        assert converted.returncode == 0, converted.stdout + converted.stderr
        assert '"converted": 5' in converted.stdout
        assert sorted(layout(d) for d in meta.db.chunks.find({})) == [(2, 1)] * 8
        assert all("." in p.name for p in fragment_files(s))  # no whole copy left
        stats = requests.get(s.url("/api/stats"), timeout=30).json()
        assert stats["ecConvert"]["converted"] == 5 and stats["layout"] == "2+1"
        assert_all_exact(s, {**old, **new})
        assert minis3(s, "fsck").returncode == 0
    finally:
        s.stop()
