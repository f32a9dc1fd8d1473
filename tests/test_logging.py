"""MINIS3_LOG_FORMAT=json: one JSON object per log line from the web, worker and beat; text
stays the default."""
from __future__ import annotations

import json
import logging
import re
import sys

import pytest

from config.logging import REQUEST_ID, JsonFormatter, formatter
from tests.stack import MiB, Stack, random_bytes, wait_for


def record(msg: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    rec = logging.getLogger("minis3.test").makeRecord("minis3.test", logging.WARNING, __file__, 1, msg, args,
                                                      exc_info, extra=extra)
    return rec


def test_a_json_line_carries_time_level_logger_message_request_id_and_extra_fields():
    token = REQUEST_ID.set("req-42")
    try:
        rec = record("stored %s in %.1fs", "abc", 1.25, file_id="abc", chunks=3)
    finally:
        REQUEST_ID.reset(token)
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    out = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", out.pop("time"))
    assert out == {"level": "WARNING", "logger": "minis3.test", "message": "stored abc in 1.2s",
                   "process": rec.process, "request_id": "req-42", "file_id": "abc", "chunks": 3}


def test_a_json_line_keeps_a_traceback_on_one_line():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        rec = record("failed", exc_info=sys.exc_info())
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    out = json.loads(line)
    assert "request_id" not in out  # no request being served
    assert out["exception"].startswith("Traceback") and "ValueError: bad\nthing" in out["exception"]


def test_text_stays_the_default(monkeypatch):
    monkeypatch.delenv("MINIS3_LOG_FORMAT", raising=False)
    assert not isinstance(formatter(), JsonFormatter)
    assert isinstance(formatter("json"), JsonFormatter)


@pytest.fixture(scope="module")
def json_stack(tmp_path_factory, backends):
    s = Stack(tmp_path_factory.mktemp("jsonlogs"), backends, beat=True, log_format="json")
    yield s
    s.stop()


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return parsed


def test_every_line_of_the_web_worker_and_beat_logs_is_json_with_the_access_and_ingest_fields(json_stack):
    s = json_stack
    data = random_bytes(2 * MiB + 9, 4401)
    r = s.upload(data, "j.bin", headers={"X-Request-ID": "jsonlog-upload-1"})
    assert r.status_code == 202, r.text
    file_id = r.json()["fileId"]
    assert s.wait_status(file_id)["status"] == "stored"
    assert s.download(file_id).content == data

    def ingest_line():
        return next((e for e in json_lines(s.log("worker")) if e.get("file_id") == file_id), None)

    ingest = wait_for(ingest_line, what="the ingest line")
    assert ingest["request_id"] == "jsonlog-upload-1" and ingest["status"] == "stored"
    assert ingest["chunks"] == 3 and isinstance(ingest["seconds"], float) and ingest["level"] == "INFO"

    def access_line():
        return next((e for e in json_lines(s.log("web")) if e.get("logger") == "minis3.access"
                     and e.get("request_id") == "jsonlog-upload-1"), None)

    access = wait_for(access_line, what="the access line")
    assert access["method"] == "POST" and access["route"] == "/api/upload" and access["status"] == 202
    assert access["bytes_in"] > len(data) and access["bytes_out"] == len(r.content)
    assert isinstance(access["duration_ms"], float) and access["duration_ms"] > 0

    web = json_lines(s.log("web"))
    assert any(e["logger"] == "gunicorn.error" for e in web)  # gunicorn's own lines too
    for entry in web + json_lines(s.log("worker")) + json_lines(s.log("beat")):
        assert {"time", "level", "logger", "message"} <= set(entry), entry
