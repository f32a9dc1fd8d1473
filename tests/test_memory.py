"""Resident memory of the real web and worker processes stays bounded for large transfers."""
from __future__ import annotations

import hashlib

import pytest
import requests

from tests.stack import MiB, PeakRss, random_chunks

LIMIT_MB = 150
SIZE = 256 * MiB


@pytest.mark.slow
def test_256_mib_upload_and_download_keep_each_process_under_150_mb(stack):
    sampler = PeakRss({"web": stack.procs["web"].pid, "worker": stack.procs["worker"].pid})
    sampler.start()
    sent = hashlib.sha256()

    def chunks():
        for piece in random_chunks(SIZE, seed=4242):
            sent.update(piece)
            yield piece

    r = stack.upload(chunks=chunks(), size=SIZE, name="big.bin")
    assert r.status_code == 202, r.text
    file_id = r.json()["fileId"]
    assert stack.wait_status(file_id, timeout=600)["status"] == "stored"
    got = hashlib.sha256()
    received = 0
    with requests.get(stack.url(f"/api/files/{file_id}"), stream=True, timeout=600) as resp:
        assert resp.status_code == 200
        for piece in resp.iter_content(1 << 20):
            got.update(piece)
            received += len(piece)
    peaks = sampler.stop()
    assert received == SIZE
    assert got.hexdigest() == sent.hexdigest() == r.json()["sha256"]
    print(f"peak RSS MiB: {peaks}")
    assert peaks["web"] < LIMIT_MB, peaks
    assert peaks["worker"] < LIMIT_MB, peaks
