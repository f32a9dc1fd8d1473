"""Resident memory of the real web and worker processes stays bounded for large transfers."""
from __future__ import annotations

import hashlib
import threading

import psutil
import pytest
import requests

from tests.stack import MiB, random_chunks

LIMIT_MB = 150
SIZE = 256 * MiB


class PeakRss(threading.Thread):
    """Samples the RSS of every process in a group (gunicorn master + workers, celery + pool)."""

    def __init__(self, root_pids: dict[str, int]):
        super().__init__(daemon=True)
        self.roots = {name: psutil.Process(pid) for name, pid in root_pids.items()}
        self.peak: dict[str, int] = {name: 0 for name in root_pids}
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            for name, root in self.roots.items():
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    continue
                for p in procs:
                    try:
                        self.peak[name] = max(self.peak[name], p.memory_info().rss)
                    except psutil.NoSuchProcess:
                        pass
            self.stop_event.wait(0.02)

    def stop(self) -> dict[str, float]:
        self.stop_event.set()
        self.join()
        return {name: peak / MiB for name, peak in self.peak.items()}


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
