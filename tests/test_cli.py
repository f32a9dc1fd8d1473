"""Operator commands resolve their settings in one place: ``MINIS3_*`` first, then the services
that ``minis3 run`` published under ``MINIS3_VAR_DIR``."""
from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from app.cli import command_settings
from config import embedded
from pipeline.access.keys import ApiKeys
from pipeline.metadata.repositories import Metadata
from tests.stack import BIN, ROOT


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("MINIS3_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MINIS3_VAR_DIR", str(tmp_path / "var"))
    (tmp_path / "var").mkdir()
    return tmp_path / "var"


def test_published_services_fill_the_urls_the_environment_leaves_unset(cli_env, monkeypatch):
    embedded.publish_urls(cli_env, {"redis_url": "redis://127.0.0.1:1/0", "mongo_url": "mongodb://127.0.0.1:2/"})
    settings = command_settings()
    assert (settings.redis_url, settings.mongo_url) == ("redis://127.0.0.1:1/0", "mongodb://127.0.0.1:2/")
    monkeypatch.setenv("MINIS3_MONGO_URL", "mongodb://db.example:27017/")  # the environment wins
    settings = command_settings()
    assert (settings.redis_url, settings.mongo_url) == ("redis://127.0.0.1:1/0", "mongodb://db.example:27017/")


def test_without_urls_or_a_running_store_a_command_says_how_to_find_one(cli_env):
    with pytest.raises(SystemExit) as refused:
        command_settings()
    assert str(refused.value) == (f"minis3: set MINIS3_REDIS_URL and MINIS3_MONGO_URL, or start `minis3 run` "
                                  f"with MINIS3_VAR_DIR={cli_env} first")
    with pytest.raises(SystemExit, match="set MINIS3_MONGO_URL, or start"):
        command_settings(needs=("mongo_url",))


def test_keys_create_in_a_second_shell_finds_the_embedded_metadata_store(cli_env, backends):
    db = "k" + uuid.uuid4().hex[:12]
    embedded.publish_urls(cli_env, {"redis_url": "redis://127.0.0.1:1/0", "mongo_url": backends.mongo_url})
    env = {**os.environ, "MINIS3_MONGO_DB": db}
    created = subprocess.run([str(BIN / "minis3"), "keys", "create", "--tenant", "acme"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    meta = Metadata.connect(backends.mongo_url, db)
    try:
        assert ApiKeys(meta).authenticate(created.stdout.strip()).tenant == "acme"
    finally:
        meta.client.drop_database(db)
        meta.client.close()
