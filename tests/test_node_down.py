"""One node down in the default layout (2+1 over three nodes): ingest goes on with degraded writes
(k fragments on k distinct nodes, the chunk flagged, its spooled copy held), reads stay
byte-exact, and heal restores full redundancy once the node is back. In-process tests of the
placement decision, then real processes (gunicorn, celery worker, the minis3 command)."""
from __future__ import annotations

import errno
import hashlib
import json
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from pipeline.errors import NodeUnavailable, NodesUnavailable
from pipeline.maintenance.heal import BLOCKED, HEALED
from pipeline.metadata.repositories import Metadata
from pipeline.storage.chunkio import fragment_name, fragments, layout, missing_indexes, nodes_of
from pipeline.storage.chunkstore import ChunkStore
from tests.stack import BIN, ROOT, MiB, Stack, random_bytes
from tests.test_pipeline import CHUNK, pieces, put, read_all


def hashes(store, f) -> list[str]:
    return [h for page in store.meta.files.iter_manifest(f.id) for h in page.hashes]


def take_away(store, node: str) -> Path:
    d = store.chunks.node_dirs[node]
    return d.rename(d.with_name(node + ".away"))


def assert_fully_redundant(chunks, docs) -> None:
    """Every chunk has k+m fragments, on k+m distinct nodes, each file on disk with its size."""
    for doc in docs:
        k, m = layout(doc)
        frags = fragments(doc)
        assert sorted(f["i"] for f in frags) == list(range(k + m)), doc["_id"]
        assert len(set(nodes_of(doc))) == k + m and not doc.get("needsHeal")
        for f in frags:
            path = chunks.path(f["node"], fragment_name(doc["_id"], f["i"], k, m))
            assert path.stat().st_size == f["size"]


# --- the placement decision (in-process) --------------------------------------------------------

def test_placement_with_one_node_down_gives_k_distinct_nodes_spread_evenly(store):
    stripes = store.placement.next_stripes(60, 3, usable={"node-1", "node-3"})
    assert all(len(s) == 2 and len(set(s)) == 2 and "node-2" not in s for s in stripes)
    firsts = Counter(s[0] for s in stripes)
    assert abs(firsts["node-1"] - firsts["node-3"]) <= 20  # both take data fragment 0 in turn
    assert sum(1 for s in store.placement.next_stripes(60, 3) if len(set(s)) == 3) == 60


def test_one_node_down_stores_each_chunk_on_k_nodes_flagged_with_its_missing_index_and_held(store):
    queued: list[str] = []
    store.heal_enqueue = lambda *hs: queued.extend(hs)
    away = take_away(store, "node-2")
    data = random_bytes(5 * CHUNK + 77, 600)
    f = put(store, data)  # stored, not waiting for the node
    docs = [store.meta.chunks.get_chunk(h) for h in hashes(store, f)]
    for d in docs:
        assert sorted(nodes_of(d)) == ["node-1", "node-3"] and missing_indexes(d) == [2]  # the parity
        assert d["needsHeal"] and store.spool.is_held(d["_id"])
    assert sorted(queued) == sorted(d["_id"] for d in docs) and not store.spool.exists(f.id)
    health = store.health()
    assert "stored with 2 of 3 fragments" in health["layout"]["reason"] and health["chunks"]["degraded"] == 6
    assert read_all(store, f) == data
    aside = store.spool.held_root.rename(store.spool.held_root.with_name("held.aside"))
    assert read_all(store, f) == data  # from the nodes alone, not from the held copies
    aside.rename(store.spool.held_root)
    assert {store.healer().heal_chunk(d["_id"]).status for d in docs} == {BLOCKED}  # nowhere to put fragment 2 yet
    assert store.spool.is_held(docs[0]["_id"])
    report = store.fsck().run()
    assert report.under_replicated.count == 6 and report.missing.count == 0 and report.unknown.count == 0
    away.rename(store.chunks.node_dirs["node-2"])
    assert store.healer().heal_all(full_scan=False).healed == 6  # the flagged chunks are found and healed
    assert_fully_redundant(store.chunks, [store.meta.chunks.get_chunk(d["_id"]) for d in docs])
    assert not any(store.spool.is_held(d["_id"]) for d in docs)
    assert store.fsck().run().clean and read_all(store, f) == data


def test_two_nodes_down_of_three_is_too_few_for_two_plus_one(store):
    take_away(store, "node-1")
    take_away(store, "node-3")
    f = store.receive("t1", "f", None, pieces(random_bytes(2 * CHUNK, 601)))
    with pytest.raises(NodesUnavailable) as err:
        store.ingest(f.id)
    assert "needs 2 writable node(s); 1 of 3" in err.value.message and store.spool.exists(f.id)


def test_a_write_refused_by_a_node_that_looked_up_is_a_fragment_left_for_heal(store, monkeypatch):
    real = store.chunks.write_fragment

    def read_only(node, name, data, batch=None):
        if node == "node-3":
            raise OSError(errno.EROFS, "Read-only file system", name)
        return real(node, name, data, batch)

    monkeypatch.setattr(store.chunks, "write_fragment", read_only)
    data = random_bytes(3 * CHUNK, 602)
    f = put(store, data)
    docs = [store.meta.chunks.get_chunk(h) for h in hashes(store, f)]
    assert all(len(fragments(d)) == 2 and "node-3" not in nodes_of(d) and store.spool.is_held(d["_id"])
               for d in docs)
    monkeypatch.undo()
    assert store.healer().heal_all().healed == 3 and store.fsck().run().clean and read_all(store, f) == data


def test_a_node_taken_away_between_the_check_and_the_write_is_not_recreated(tmp_path, monkeypatch):
    """A heal or ingest that found the node up, then lost it (renamed away by an operator), raises
    NodeUnavailable: it never makes the node's root again, which would hide the real disk."""
    chunks = ChunkStore([tmp_path / "node-1"])
    chunks.ensure_dirs()
    (tmp_path / "node-1").rename(tmp_path / "node-1.away")
    monkeypatch.setattr(chunks, "is_up", lambda node: True)  # the check ran before the rename
    with pytest.raises(NodeUnavailable):
        chunks.write_fragment("node-1", "ab" * 32, b"x" * 5000)
    assert not (tmp_path / "node-1").exists()
    (tmp_path / "node-1.away").rename(tmp_path / "node-1")  # the operator puts it back: nothing in the way


def test_the_held_copy_survives_a_second_node_lost_before_heal(store):
    take_away(store, "node-3")
    data = random_bytes(4 * CHUNK, 603)
    f = put(store, data)
    docs = [store.meta.chunks.get_chunk(h) for h in hashes(store, f)]
    shutil.rmtree(store.chunks.node_dirs["node-1"])  # a second disk dies: one fragment of two left
    assert read_all(store, f) == data  # served from the held copies, verified
    assert store.fsck().run().missing.count == 0  # rebuildable: not lost
    store.chunks.node_dirs["node-1"].mkdir()
    store.chunks.node_dirs["node-3"].with_name("node-3.away").rename(store.chunks.node_dirs["node-3"])
    assert [store.healer().heal_chunk(d["_id"]).status for d in docs] == [HEALED] * 4
    assert_fully_redundant(store.chunks, [store.meta.chunks.get_chunk(d["_id"]) for d in docs])
    assert not any(store.spool.is_held(d["_id"]) for d in docs)
    assert store.fsck().run().clean and read_all(store, f) == data


def test_gc_deletes_the_held_copy_with_its_chunk_and_fsck_reports_a_stray_one(store):
    take_away(store, "node-2")
    f = put(store, random_bytes(2 * CHUNK, 604))
    held = hashes(store, f)
    assert all(store.spool.is_held(h) for h in held)
    # the spool sweep skips them
    store.garbage_collector().clean_spool(now=time.time() + store.settings.spool_abandon_s + 1)
    assert all(store.spool.is_held(h) for h in held)
    store.delete("t1", f.id)
    store.garbage_collector().collect(now=time.time() + store.settings.gc_grace_s + 1)
    assert store.meta.chunks.count_chunks() == 0 and not any(store.spool.is_held(h) for h in held)
    stray = store.spool.held_path("ab" * 32)  # a copy whose chunk is gone (a crash between the two)
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"x")
    report = store.fsck().run()
    assert report.unknown.count == 1 and report.unknown.sample[0]["path"] == str(stray)
    later = time.time() + store.settings.gc_grace_s + 1
    assert store.fsck().run(repair=True, now=later).repaired["removed"] == 1 and not stray.exists()


# --- real processes: 50 uploads through /api with a node down ----------------------------------

def minis3(s: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "minis3"), *args], env=s.env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def sizes(count: int) -> list[int]:
    """Small files and multi-chunk ones (4 MiB, and odd sizes across chunk boundaries)."""
    odd = [1, 1000, 64 * 1024 + 3, MiB - 1, MiB + 1, 2 * MiB + 12345]
    return [4 * MiB if i % 5 == 0 else odd[i % len(odd)] + i for i in range(count)]


def upload_all_and_wait(s: Stack, count: int, seed: int) -> dict[str, bytes]:
    files = {}
    for i, size in enumerate(sizes(count)):
        data = random_bytes(size, seed + i)
        r = s.upload(data, f"f{i}.bin")
        assert r.status_code == 202, r.text
        files[r.json()["fileId"]] = data
    deadline = time.monotonic() + 300
    for file_id in files:  # one deadline for all of them: ingest must not wait for the node
        status = s.wait_status(file_id, timeout=max(1.0, deadline - time.monotonic()))
        assert status["status"] == "stored", status
    return files


def assert_exact(s: Stack, files: dict[str, bytes]) -> None:
    for file_id, data in files.items():
        r = s.download(file_id)
        assert r.status_code == 200 and hashlib.sha256(r.content).digest() == hashlib.sha256(data).digest()


def chunk_docs(s: Stack) -> list[dict]:
    meta = Metadata.connect(s.settings.mongo_url, s.settings.mongo_db)
    try:
        return list(meta.db.chunks.find({}))
    finally:
        meta.client.close()


def node_down_then_back(tmp_path, backends, count: int, seed: int, take_down, bring_back) -> None:
    s = Stack(tmp_path, backends)
    try:
        assert s.settings.ec == "2+1" and len(s.settings.nodes) == 3
        files = {s.put(b"before" * 1000): b"before" * 1000}  # node-2 holds data: it stays down when lost
        before = {d["_id"] for d in chunk_docs(s)}
        node = Path(s.settings.nodes[1])
        take_down(node)
        states = {n["node"]: n["state"] for n in requests.get(s.url("/api/health"), timeout=30).json()["nodes"]}
        assert states["node-2"] == "down"
        files.update(upload_all_and_wait(s, count, seed))
        new = [d for d in chunk_docs(s) if d["_id"] not in before]
        held = Path(s.settings.spool_dir) / ".held"
        assert new and all(sorted(nodes_of(d)) == ["node-1", "node-3"] and missing_indexes(d) == [2]
                           and d.get("needsHeal") for d in new)
        assert {p.name for p in held.glob("??/*")} == {d["_id"] for d in new}
        assert_exact(s, files)
        bring_back(node)
        healed = minis3(s, "heal", "--flagged", "--json")  # what beat's sweep of flagged chunks runs
        assert healed.returncode == 0, healed.stdout + healed.stderr
        report = json.loads(healed.stdout)
        # the worker's heal tasks may take some of them meanwhile: what counts is the end state
        assert report["healed"] > 0 and report["lost"] == report["blocked"] == report["partial"] == 0
        assert_fully_redundant(ChunkStore(s.settings.nodes), chunk_docs(s))
        assert not list(held.glob("??/*"))  # released once the chunks were whole again
        checked = minis3(s, "fsck")
        assert checked.returncode == 0 and "clean" in checked.stdout, checked.stdout + checked.stderr
        assert_exact(s, files)
    finally:
        s.stop()


def test_fifty_uploads_with_a_node_directory_removed_are_stored_then_healed(tmp_path, backends):
    node_down_then_back(tmp_path, backends, 50, 6100, take_down=shutil.rmtree, bring_back=Path.mkdir)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


def test_uploads_with_a_node_read_only_are_stored_then_healed_once_it_is_writable(tmp_path, backends):
    probe = tmp_path / "probe"
    probe.mkdir()
    try:  # a read-only filesystem is what makes a directory unwritable for root too
        _mount("--bind", str(probe), str(probe))
        _mount("-o", "remount,bind,ro", str(probe))
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot mount a read-only bind mount here (needs CAP_SYS_ADMIN)")
    finally:
        subprocess.run(["umount", str(probe)], capture_output=True, timeout=30)
    mounted: list[Path] = []

    def read_only(node: Path) -> None:
        _mount("--bind", str(node), str(node))
        mounted.append(node)
        _mount("-o", "remount,bind,ro", str(node))

    def writable(node: Path) -> None:
        subprocess.run(["umount", str(node)], check=True, capture_output=True, timeout=30)
        mounted.remove(node)

    try:
        node_down_then_back(tmp_path / "stack", backends, 12, 6200, take_down=read_only, bring_back=writable)
    finally:
        for node in mounted:
            subprocess.run(["umount", "-l", str(node)], capture_output=True, timeout=30)


def test_a_heal_that_cannot_write_keeps_the_record_of_a_fragment_whose_node_is_away(store):
    """A node taken away for a while: a heal that found its fragment missing and could not rebuild
    it (the target went down too) keeps the fragment's record, so that when the node comes back
    the fragment is read and named again, never left a stray."""
    data = random_bytes(CHUNK, 610)
    f = put(store, data)
    h = hashes(store, f)[0]
    before = store.meta.chunks.get_chunk(h)
    away = next(x for x in fragments(before) if x["i"] == 2)
    root = Path(store.chunks.node_dirs[away["node"]])
    root.rename(root.with_name(root.name + ".away"))
    healer = store.healer()
    healer.usable_nodes = lambda: set(store.chunks.node_ids)  # a view from before the node went away
    result = healer.heal_chunk(h)
    assert result.status != HEALED and result.rebuilt == []
    after = store.meta.chunks.get_chunk(h)
    assert sorted((x["i"], x["node"]) for x in fragments(after)) == sorted((x["i"], x["node"]) for x in fragments(before))
    root.with_name(root.name + ".away").rename(root)
    assert store.healer().heal_chunk(h).status == "healthy"
    assert store.fsck().run().clean and read_all(store, f) == data
