"""schemathesis against a live stack (gunicorn + worker) with its own /api/openapi.json.

Every generated request (valid and invalid data, missing or stripped auth, unsupported methods,
stateful upload → status → download → delete chains) must get an answer that the description
allows: no 5xx, documented status codes, content types, headers and bodies.
"""
from __future__ import annotations

import subprocess

import pytest

from tests.probes import create_key, private_backends as backends  # noqa: F401
from tests.stack import BIN, MiB, Stack

EXAMPLES = 30  # per operation and phase: about 15 s on a 2-core machine

# Every request carries a valid key, so good data never gets 401. A valid Range header may still
# lie outside the file: 416 is the right answer to good data too; so is 403 to a tenant's key
# asking for an operator's view (/api/stats/history).
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "403", "404", "409", "416"]
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory, backends):
    s = Stack(tmp_path_factory.mktemp("schemathesis"), backends, max_upload_bytes=8 * MiB)
    yield s
    s.stop()


def test_live_service_conforms_to_its_openapi_description(stack, tmp_path):
    key = create_key(stack, "fuzz")  # from now on the stack requires keys: ignored_auth is checked
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    run = subprocess.run(
        [str(BIN / "schemathesis"), "--config-file", str(config), "run", stack.url("/api/openapi.json"),
         "--header", f"Authorization: Bearer {key}", "--checks", "all", "--max-examples", str(EXAMPLES),
         "--seed", "1", "--request-timeout", "60", "--workers", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    assert "unexpected error" not in stack.log("web")
