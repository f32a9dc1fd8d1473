"""``Metadata``: the repositories of one MongoDB database, built once per process by the store."""
from __future__ import annotations

import pymongo

from pipeline.metadata.access import AccessRepository
from pipeline.metadata.chunks import ChunkRepository
from pipeline.metadata.files import FileRepository
from pipeline.metadata.mongo import connect_client, ensure_indexes
from pipeline.metadata.namespace import NamespaceRepository
from pipeline.metadata.operations import OperationsRepository
from pipeline.metadata.versions import VersionStore


class Metadata:
    """``files`` (files and manifests), ``chunks``, ``namespace`` (buckets, names, uploads, parts),
    ``access`` (API keys, S3 credentials) and ``operations`` (events, samples, usage, nodes) and ``versions`` (object versions)."""

    def __init__(self, client: pymongo.MongoClient, db_name: str):
        self.client = client
        self.db = client[db_name]
        self.files = FileRepository(self.db)
        self.chunks = ChunkRepository(self.db)
        self.namespace = NamespaceRepository(self.db)
        self.access = AccessRepository(self.db)
        self.operations = OperationsRepository(self.db)
        self.versions = VersionStore(self.db)

    @classmethod
    def connect(cls, url: str, db_name: str, timeout_ms: int = 3000,
                write_concern: str = "majority") -> "Metadata":
        return cls(connect_client(url, timeout_ms, write_concern), db_name)

    def ensure_indexes(self) -> None:
        ensure_indexes(self.db)
        self.versions.ensure_indexes()

    def ping(self) -> None:
        self.client.admin.command("ping")
