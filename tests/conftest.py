"""Fixtures: a session-wide nx-27017, private Redis servers, and stacks of real processes."""
from __future__ import annotations

import uuid

import pytest

from config import embedded
from config.settings import Settings
from pipeline.store import ObjectStore
from tests.stack import Backends, Stack


@pytest.fixture(scope="session")
def backends(tmp_path_factory):
    b = Backends(tmp_path_factory.mktemp("backends"))
    yield b
    b.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    port = embedded.free_port()
    proc = embedded.start_redis(tmp_path_factory.mktemp("redis"), port)
    yield f"redis://127.0.0.1:{port}/0"
    embedded.stop(proc)


@pytest.fixture
def settings(tmp_path, backends, redis_server) -> Settings:
    """Settings for an in-process store: its own nodes, spool and database."""
    return Settings().with_overrides(
        redis_url=redis_server, mongo_url=backends.mongo_url, mongo_db="u" + uuid.uuid4().hex[:12],
        nodes=tuple(tmp_path / f"nodes/node-{i}" for i in (1, 2, 3)), spool_dir=tmp_path / "spool",
        var_dir=tmp_path / "var", chunk_size=64 * 1024, manifest_page_size=4, rate_limit="",
    )


def _store(settings: Settings):
    s = ObjectStore.from_settings(settings)
    s.prepare()
    s.placement.key = "rr:" + settings.mongo_db
    yield s
    s.meta.client.drop_database(settings.mongo_db)
    s.meta.client.close()


@pytest.fixture
def store(settings) -> ObjectStore:
    """An in-process store in the default layout (2+1 over three nodes)."""
    yield from _store(settings)


@pytest.fixture
def whole_store(settings) -> ObjectStore:
    """An in-process store keeping one whole copy of each chunk (MINIS3_EC=1+0)."""
    yield from _store(settings.with_overrides(ec="1+0"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, backends):
    """gunicorn + celery worker over HTTP, shared by the tests of one module."""
    s = Stack(tmp_path_factory.mktemp("stack"), backends)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory, backends):
    """gunicorn (web and S3) + celery worker, shared by the tests of one module."""
    s = Stack(tmp_path_factory.mktemp("s3stack"), backends, s3=True)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def s3_keys(s3_stack):
    """An S3 access key id and secret of tenant ``acme``."""
    return s3_stack.s3_credentials("acme")
