#!/usr/bin/env python3
"""Benchmark of chunk layouts: what erasure coding costs against nginx, in one run.

For 1+0, 2+1 (three nodes) and 4+2 (six nodes): upload a file to stored, download it verified
with every node up and with one node directory gone (degraded reads decode from parity), peak
worker RSS; then the scrub's achieved rate against MINIS3_SCRUB_MBPS. nginx WebDAV PUT/GET of the
same bytes run first as the baselines (bench/run.py's). Prints a table and writes it as JSON under
bench/results/ (``ec-<stamp>.json``).

    .venv/bin/python bench/ec.py            # 1 GiB
    .venv/bin/python bench/ec.py --quick    # 64 MiB
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import (MiB, Figure, Nginx, Store, curl, curl_get, figure, human, run_table_script,  # noqa: E402
                       random_file, rate, settle)
from tests.stack import Backends, PeakRss, Stack  # noqa: E402

LAYOUTS = (("1+0", 3), ("2+1", 3), ("4+2", 6))
TARGETS = {"2+1": {"put": 0.4, "get": 0.7, "degraded": 0.4}}


def run(size: int, work: Path, log, scrub_s: float) -> list[Figure]:
    figures: list[Figure] = []
    src = work / "input.bin"
    sha = random_file(src, size)
    settle()
    put_base = get_base = None
    if shutil.which("nginx"):
        log("baseline: nginx WebDAV PUT and GET")
        nginx = Nginx(work / "nginx")
        try:
            code, put_s, _ = curl("-T", str(src), f"{nginx.base_url}/big.bin")
            settle()
            code, get_s, got = curl_get(f"{nginx.base_url}/big.bin")
        finally:
            nginx.stop()
            shutil.rmtree(work / "nginx", ignore_errors=True)
        put_base = figure(figures, f"nginx PUT {human(size)}", rate(size, put_s), "MB/s")
        get_base = figure(figures, f"nginx GET {human(size)}", rate(size, get_s), "MB/s")
    backends = Backends(work / "backends")
    try:
        for ec, count in LAYOUTS:
            log(f"store {ec} over {count} nodes")
            root = work / f"store-{ec.replace('+', '-')}"
            stack = Stack(root, backends, ec=ec, nodes=tuple(root / f"nodes/node-{i}" for i in range(1, count + 1)),
                          web_workers=2, web_threads=16)
            try:
                store = Store(stack, backends)
                target = TARGETS.get(ec, {})
                settle()
                with PeakRss(store.roots()) as rss:
                    up = store.upload(src, measure=False)
                store.verify_download(up.file_id, sha, size)
                figure(figures, f"{ec}: upload {human(size)} to stored", rate(size, up.to_stored.seconds), "MB/s",
                       put_base and put_base.name, put_base and put_base.value,
                       f">= {target['put']}x nginx PUT" if target else None, ratio_min=target.get("put"))
                figure(figures, f"{ec}: worker peak RSS", rss.mib()["worker"], "MiB",
                       target="<= 150 MB" if target else None, value_max=150e6 / MiB if target else None)
                settle()
                code, get_s, got = curl_get(store.url(f"/api/files/{up.file_id}"))
                assert code == 200 and got == size
                figure(figures, f"{ec}: download, verified, all nodes up", rate(size, get_s), "MB/s",
                       get_base and get_base.name, get_base and get_base.value,
                       f">= {target['get']}x nginx GET" if target else None, ratio_min=target.get("get"))
                if ec != "1+0":
                    gone = Path(stack.settings.nodes[0])
                    gone.rename(gone.with_name("gone"))
                    store.verify_download(up.file_id, sha, size)  # byte-exact while degraded
                    code, get_s, got = curl_get(store.url(f"/api/files/{up.file_id}"))
                    assert code == 200 and got == size
                    figure(figures, f"{ec}: download, verified, one node gone", rate(size, get_s), "MB/s",
                           get_base and get_base.name, get_base and get_base.value,
                           f">= {target['degraded']}x nginx GET" if target else None,
                           ratio_min=target.get("degraded"))
                    gone.with_name("gone").rename(gone)
                if ec == "2+1":
                    figures.append(scrub_rate(stack, scrub_s))
            finally:
                stack.stop()
    finally:
        backends.stop()
    return figures


def scrub_rate(stack: Stack, seconds: float) -> Figure:
    """Run the scrub in-process against the stack for ``seconds`` at its configured rate."""
    from pipeline.store import ObjectStore

    store = ObjectStore.from_settings(stack.settings)
    report = store.scrubber().run_slice(budget_s=seconds, full=True)
    limit = stack.settings.scrub_mbps
    store.meta.client.close()
    return Figure(f"2+1: scrub rate over {report.bytes / MiB:.0f} MiB (limit {limit:g} MB/s)", report.mbps, "MB/s",
                  target=f"<= {limit:g} MB/s", ratio=report.mbps / limit, met=report.mbps <= limit * 1.05)


def main(argv: list[str] | None = None) -> int:
    return run_table_script(
        "ec", __doc__, lambda size, work, log, args: run(size, work, log, args.scrub_seconds),
        add_arguments=lambda parser: parser.add_argument("--scrub-seconds", type=float, default=10.0), argv=argv)


if __name__ == "__main__":
    sys.exit(main())
