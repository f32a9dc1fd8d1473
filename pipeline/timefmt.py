"""Timestamps as every answer and CLI output shows them: ISO 8601 in UTC with milliseconds.

MongoDB and the nx-27017 stand-in both keep epoch seconds (a double) exactly enough, so that is
what the metadata holds; this is the one place that turns them into text.
"""
from __future__ import annotations

from datetime import datetime, timezone


def iso8601(ts: float | None) -> str | None:
    """``1795624769.671`` -> ``"2026-11-25T16:39:29.671Z"``; None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def iso8601_seconds(ts: float) -> str:
    """``1795624769.671`` -> ``"2026-11-25T16:39:29.000Z"``: whole seconds, as S3 lists times (HTTP dates
    such as Last-Modified carry no fraction either, so a listing and a HEAD agree)."""
    return datetime.fromtimestamp(int(ts), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
