"""End to end: gunicorn + celery worker processes over HTTP, real Redis and nx-27017."""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests

from config.settings import Settings
from tests.stack import MiB, random_bytes

FRAGS = sum(Settings().ec_layout)  # chunk files per chunk in the default layout (2+1: three fragments)
K = Settings().ec_layout[0]


def chunk_of(path: str) -> str:
    return Path(path).name.partition(".")[0]


@pytest.mark.parametrize("size", [0, 1, MiB - 1, MiB, MiB + 1, 40 * MiB])
def test_round_trip_is_byte_exact(stack, size):
    data = random_bytes(size, seed=1000 + size)
    r = stack.upload(data, "sample.bin")
    assert r.status_code == 202
    body = r.json()
    assert body["success"] is True and body["status"] == "queued"
    assert body["statusUrl"] == f"/api/files/{body['fileId']}/status"
    assert len(body["fileId"]) == 24
    status = stack.wait_status(body["fileId"])
    assert status["status"] == "stored"
    assert status["progress"] == {"chunksDone": -(-size // MiB), "chunksTotal": -(-size // MiB)}
    got = stack.download(body["fileId"])
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == hashlib.sha256(data).hexdigest()
    assert got.content == data
    assert got.headers["Content-Length"] == str(size)
    assert got.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert got.headers["Accept-Ranges"] == "bytes"


def test_upload_with_wait_answers_201_when_stored(stack):
    data = random_bytes(3 * MiB + 5, 2001)
    r = stack.upload(data, wait=True)
    assert r.status_code == 201
    assert r.json()["status"] == "stored"
    assert stack.download(r.json()["fileId"]).content == data


def test_same_file_twice_adds_no_chunk_and_no_byte(stack):
    data = random_bytes(10 * MiB, 2002)
    first = stack.put(data)
    before = stack.chunk_files()
    second = stack.put(data, name="copy.bin")
    assert stack.chunk_files() == before
    files = requests.get(stack.url("/api/files?limit=1000"), timeout=30).json()["files"]
    listed = {f["fileId"]: f["name"] for f in files}
    assert (listed.get(first), listed.get(second)) == ("blob.bin", "copy.bin")  # two files, one copy of the bytes
    assert stack.download(first).content == data
    assert requests.delete(stack.url(f"/api/files/{first}"), timeout=30).status_code == 204
    assert stack.download(first).status_code == 404
    assert stack.download(second).content == data  # deleting one file leaves the other whole


def test_files_sharing_chunks_store_shared_chunks_once(stack):
    a, b, c, d, e = (random_bytes(MiB, 2010 + i) for i in range(5))
    before = stack.chunk_files()
    f1 = stack.put(a + b + c + d)
    f2 = stack.put(c + d + e)
    added = set(stack.chunk_files()) - set(before)
    assert len(added) == 5 * FRAGS and len({chunk_of(p) for p in added}) == 5
    assert stack.download(f1).content == a + b + c + d
    assert stack.download(f2).content == c + d + e


def test_thirty_distinct_chunks_land_ten_per_node(stack):
    def per_node():
        return [len([p for p in Path(n).rglob("*") if p.is_file()]) for n in stack.settings.nodes]

    before = per_node()
    stack.put(random_bytes(30 * MiB, 2020))
    after = per_node()
    assert [a - b for a, b in zip(after, before)] == [10 * FRAGS] * 3


def test_eight_parallel_uploads_of_one_new_file_keep_one_copy(stack):
    data = random_bytes(8 * MiB, 2030)
    before = stack.chunk_files()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: stack.upload(data, f"p{i}.bin").json()["fileId"], range(8)))
    for file_id in ids:
        assert stack.wait_status(file_id)["status"] == "stored"
    added = {p: s for p, s in stack.chunk_files().items() if p not in before}
    assert len(added) == 8 * FRAGS
    names = [Path(p).name for p in added]
    assert len(set(names)) == 8 * FRAGS and len({chunk_of(p) for p in added}) == 8
    for file_id in ids:
        assert stack.download(file_id).content == data


def test_flipped_chunk_fails_that_download_visibly_and_others_still_work(stack):
    data = random_bytes(3 * MiB, 2040)
    other = random_bytes(2 * MiB, 2041)
    victim_id = stack.put(data)
    other_id = stack.put(other)
    chunk_hash = hashlib.sha256(data[MiB:2 * MiB]).hexdigest()
    # more damage than the layout survives: every data fragment (or the one whole copy)
    for path in sorted(Path(p) for p in stack.chunk_files() if chunk_of(p) == chunk_hash)[:FRAGS - K + 1]:
        raw = bytearray(path.read_bytes())
        raw[12345] ^= 0x01
        path.write_bytes(bytes(raw))
    received = b""
    with pytest.raises(requests.exceptions.RequestException):
        with requests.get(stack.url(f"/api/files/{victim_id}"), stream=True, timeout=60) as r:
            assert r.status_code == 200
            for piece in r.iter_content(65536):
                received += piece
    assert received != data and data.startswith(received)
    assert chunk_hash in stack.log("web")
    assert stack.download(other_id).content == other


def test_range_reads_return_exactly_those_bytes(stack):
    data = random_bytes(3 * MiB + 100, 2050)
    file_id = stack.put(data)
    url = stack.url(f"/api/files/{file_id}")
    size = len(data)
    cases = {
        "bytes=0-0": data[0:1],
        f"bytes={size - 1}-{size - 1}": data[-1:],
        f"bytes={MiB - 10}-{MiB + 9}": data[MiB - 10:MiB + 10],
        "bytes=-500": data[-500:],
        f"bytes={2 * MiB}-": data[2 * MiB:],
    }
    for header, expected in cases.items():
        r = requests.get(url, headers={"Range": header}, timeout=60)
        assert r.status_code == 206, header
        assert r.content == expected, header
        assert r.headers["Content-Length"] == str(len(expected))
        assert r.headers["Content-Range"].endswith(f"/{size}")
    r = requests.get(url, headers={"Range": f"bytes={size}-{size + 10}"}, timeout=60)
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{size}"
    assert r.json()["error"]["code"] == "range_not_satisfiable"


def test_status_list_and_by_hash(stack):
    # three files at least, whatever ran before: two pages of two
    oldest, older = (stack.put(random_bytes(1000, seed), name=f"{seed}.bin") for seed in (2061, 2062))
    data = random_bytes(2 * MiB, 2060)
    file_id = stack.put(data, name="räksmörgås 報告.txt")
    r = requests.get(stack.url(f"/api/files/by-hash/{hashlib.sha256(data).hexdigest()}"), timeout=60)
    assert r.status_code == 200 and r.content == data
    assert "filename*=UTF-8''r%C3%A4ksm%C3%B6rg%C3%A5s%20%E5%A0%B1%E5%91%8A.txt" in r.headers["Content-Disposition"]
    listing = requests.get(stack.url("/api/files?limit=2"), timeout=30).json()
    assert [f["fileId"] for f in listing["files"]] == [file_id, older]
    assert len(listing["files"]) == 2 and listing["nextCursor"] == listing["files"][1]["fileId"]
    page2 = requests.get(stack.url(f"/api/files?limit=2&cursor={listing['nextCursor']}"), timeout=30).json()
    assert page2["files"][0]["fileId"] == oldest
    assert {f["fileId"] for f in page2["files"]}.isdisjoint({f["fileId"] for f in listing["files"]})


def test_health_reports_redis_mongodb_and_each_node(stack):
    r = requests.get(stack.url("/api/health"), timeout=30)
    assert r.status_code == 200
    body = r.json()
    assert body["redis"]["ok"] and body["mongodb"]["ok"]
    assert [n["node"] for n in body["nodes"]] == ["node-1", "node-2", "node-3"]


def test_workers_run_at_a_lower_cpu_priority_than_the_web(stack):
    worker = psutil.Process(stack.procs["worker"].pid)
    web = psutil.Process(stack.procs["web"].pid)
    pool = worker.children(recursive=True)
    assert pool  # the prefork pool that runs the tasks
    assert web.nice() == 0
    assert all(p.nice() == 10 for p in [worker, *pool])  # MINIS3_WORKER_NICE's default
