"""Group commit: records submitted together are written together, each caller sees its own outcome."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from bson import ObjectId
from pymongo import monitoring

from pipeline.metadata.groupcommit import GroupCommit


def test_a_lone_record_is_written_at_once_by_its_caller():
    batches = []
    commit = GroupCommit(lambda items: batches.append(list(items)) or [None] * len(items))
    commit.submit("a")
    commit.submit("b")
    assert batches == [["a"], ["b"]]


def test_records_submitted_during_a_write_go_together_and_each_once():
    batches, lock = [], threading.Lock()

    def write(items):
        time.sleep(0.02)  # a slow write: others arrive meanwhile
        with lock:
            batches.append(list(items))
        return [None] * len(items)

    commit = GroupCommit(write, max_batch=8)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(commit.submit, range(64)))
    written = [i for batch in batches for i in batch]
    assert sorted(written) == list(range(64))
    assert len(batches) < 64 and max(len(b) for b in batches) <= 8


def test_each_caller_raises_its_own_error_only():
    def write(items):
        time.sleep(0.01)
        return [ValueError(i) if i % 3 == 0 else None for i in items]

    commit = GroupCommit(write)

    def submit(i):
        try:
            commit.submit(i)
            return None
        except ValueError as exc:
            return exc.args[0]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(submit, range(30)))
    assert outcomes == [i if i % 3 == 0 else None for i in range(30)]


def test_a_failed_write_fails_its_batch_and_the_next_one_still_runs():
    calls = []

    def write(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise ConnectionError("down")
        return [None] * len(items)

    commit = GroupCommit(write)
    with pytest.raises(ConnectionError):
        commit.submit("first")
    commit.submit("second")
    assert calls == [["first"], ["second"]]


class Commands(monitoring.CommandListener):
    def __init__(self):
        self.names = []

    def started(self, event):
        self.names.append((event.command_name, event.command.get(event.command_name)))

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def test_concurrent_new_files_are_recorded_with_their_last_page_in_two_inserts(settings):
    import pymongo

    from pipeline.metadata.repositories import Metadata

    listener = Commands()
    meta = Metadata(pymongo.MongoClient(settings.mongo_url, event_listeners=[listener]), settings.mongo_db)
    files = meta.files
    slow = files._write_records

    def write(records):
        time.sleep(0.05)  # the first write is slow: the others queue behind it
        return slow(records)

    files._records._write = write
    ids = [ObjectId() for _ in range(6)]

    def record(file_id):
        page = files.manifest_page_doc(str(file_id), 0, 0, 0, ["a" * 64], ["x"], [1])
        return files.insert_file(file_id, "t", "n", "text/plain", 1, None, 1, 1024, last_page=page)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(record, ids))
    for file_id in ids:
        assert files.get_file(str(file_id)).status == "queued"
        assert files.manifest_page(str(file_id), 0).hashes == ["a" * 64]
    inserts = [n for n in listener.names if n[0] in ("insert", "update")]
    assert len(inserts) < 12  # two per file when written one by one


def test_concurrent_names_go_in_one_insert_and_each_returns_what_it_replaced(settings):
    """New names of a batch in one insert; a name that existed (or came twice in the batch) is
    replaced on its own and returns the file it replaced, which its caller deletes."""
    import pymongo

    from pipeline.metadata.repositories import Metadata

    listener = Commands()
    meta = Metadata(pymongo.MongoClient(settings.mongo_url, event_listeners=[listener]), settings.mongo_db)
    names = meta.namespace
    assert names.put_object_name({"_id": "b/old", "bucket": "b", "key": "old", "file": "f-old"}) is None
    slow = names._put_names
    batches = []

    def write(docs):
        time.sleep(0.05)  # the first write is slow: the others queue behind it
        batches.append([d["file"] for d in docs])
        return slow(docs)

    names._names._write = write
    docs = [{"_id": f"b/k{i}", "bucket": "b", "key": f"k{i}", "file": f"f{i}"} for i in range(6)]
    docs += [{"_id": "b/old", "bucket": "b", "key": "old", "file": "f-new"},
             {"_id": "b/k1", "bucket": "b", "key": "k1", "file": "f1-again"}]
    listener.names.clear()
    with ThreadPoolExecutor(8) as pool:
        replaced = dict(zip((d["file"] for d in docs), pool.map(names.put_object_name, docs)))
    assert max(len(b) for b in batches) > 1  # some went together
    assert replaced["f-new"] == {"_id": "b/old", "file": "f-old"}
    # of the two writes of k1, the later replaced the earlier
    later_k1, earlier_k1 = ("f1-again", "f1") if replaced["f1-again"] is not None else ("f1", "f1-again")
    assert replaced[earlier_k1] is None and replaced[later_k1] == {"_id": "b/k1", "file": earlier_k1}
    current = {d["_id"]: d["file"] for d in meta.db.objects.find({}, {"file": 1})}
    assert current == {**{f"b/k{i}": f"f{i}" for i in range(6)}, "b/k1": later_k1, "b/old": "f-new"}
    writes = [n for n in listener.names if n[0] in ("insert", "findAndModify")]
    assert len(writes) < len(docs)  # one each when written one by one


def test_a_leader_expecting_more_records_waits_for_them_and_writes_them_together():
    batches = []
    arrived = threading.Event()

    def write(items):
        batches.append(list(items))
        return [None] * len(items)

    def expected(pending):
        arrived.set()  # the leader asks: it is about to wait, the others may come now
        return 3

    # a linger far longer than the test: only the arrival of the expected records ends the wait
    commit = GroupCommit(write, linger_s=60, expected=expected)
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(commit.submit, "a")
        arrived.wait(10)
        rest = [pool.submit(commit.submit, x) for x in ("b", "c")]
        for f in [first, *rest]:
            f.result(timeout=30)
    assert len(batches) == 1 and sorted(batches[0]) == ["a", "b", "c"]


def test_a_leader_writes_what_it_has_when_the_expected_records_do_not_come():
    batches = []
    commit = GroupCommit(lambda items: batches.append(list(items)) or [None] * len(items),
                         linger_s=0.01, expected=lambda pending: 5)
    assert commit.submit("a") is None
    assert batches == [["a"]]


def test_small_uploads_are_counted_while_under_way_and_only_then():
    from pipeline.metadata.groupcommit import InFlight

    inflight = InFlight()
    with inflight.counting():
        with inflight.counting(False):  # a large upload is not counted
            assert inflight() == 1
        with pytest.raises(RuntimeError):
            with inflight.counting():
                assert inflight() == 2
                raise RuntimeError("the client went away")
        assert inflight() == 1
    assert inflight() == 0
