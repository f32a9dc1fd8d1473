"""Debian's Chromium driven by Playwright for Python (never a downloaded browser), for every test
that needs a browser. Where Chromium or Playwright is missing such a test skips, except under
``CI=true``, where it fails: CI cannot go green without the browser tests."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from typing import Iterator

import pytest

CHROMIUM = os.environ.get("MINIS3_CHROMIUM", "/usr/bin/chromium")
# what a headless Chromium needs on a machine with no network and no display
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI, where every test must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a browser test may not be skipped)")
    pytest.skip(reason)


def chromium_path() -> str | None:
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium browser (Playwright's ``Browser``)."""
    path = chromium_path()
    if path is None:
        unavailable(f"Chromium is not installed ({CHROMIUM}): apt-get install chromium chromium-driver")
    try:
        from playwright import sync_api
    except ImportError:
        unavailable("Playwright for Python is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
