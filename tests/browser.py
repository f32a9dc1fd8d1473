"""A headless Chromium for tests, driven by Playwright for Python.

Where Chromium or Playwright is missing the test is skipped, except under ``CI=true``, where a
missing browser is a failure: CI must run the browser tests, not silently pass without them.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from typing import Iterator

import pytest

CHROMIUM = os.environ.get("MINIS3_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI=true."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason} (CI=true: browser tests must run)")
    pytest.skip(reason)


def chromium_path() -> str | None:
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


@contextmanager
def chromium() -> Iterator[object]:
    """A launched Playwright Chromium browser (sync API)."""
    path = chromium_path()
    if path is None:
        unavailable(f"Chromium is not installed ({CHROMIUM}): apt-get install chromium")
    try:
        from playwright import sync_api
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
