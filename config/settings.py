"""Typed settings read from the environment (prefix ``MINIS3_``), validated at start-up."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping


class SettingsError(ValueError):
    """A configuration value is missing or malformed."""


AUTH_MODES = ("auto", "open", "required")
LOG_FORMATS = ("text", "json")
CHUNKINGS = ("fixed", "fastcdc")


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 3000
    redis_url: str | None = None
    mongo_url: str | None = None
    mongo_db: str = "minis3"
    nodes: tuple[Path, ...] = (Path("nodes/node-1"), Path("nodes/node-2"), Path("nodes/node-3"))
    spool_dir: Path = Path("spool")
    var_dir: Path = Path("var")
    chunk_size: int = 1 << 20
    manifest_page_size: int = 1000
    max_upload_bytes: int = 0
    rate_limit: str = "100 per 15 minutes"
    auth: str = "auto"
    cors_origins: tuple[str, ...] = ()
    trusted_proxies: int = 0
    gc_interval_s: float = 300.0
    gc_grace_s: float = 600.0
    gc_lock_ttl_s: float = 60.0  # a killed GC run holds GC off this long
    stuck_after_s: float = 300.0
    sample_interval_s: float = 60.0  # how often beat records the store's figures (queue, throughput, usage)
    spool_abandon_s: float = 3600.0
    wait_timeout_s: float = 3600.0
    header_timeout_s: float = 20.0  # a request's headers must arrive within this (slowloris)
    read_timeout_s: float = 60.0  # a body read waits at most this long for the next bytes
    flower_port: int = 5555
    web_workers: int = 2
    web_threads: int = 16
    worker_concurrency: int = 2
    # how much lower the workers' CPU priority is (nice) than the web's: background ingest, GC and
    # scrub yield the CPU to requests being answered; 0 keeps them equal
    worker_nice: int = 10
    # scale-out: which host this is, and the write concern of metadata writes that acknowledge data
    host_id: str | None = None
    mongo_write_concern: str = "majority"
    metrics_port: int = 0  # 0: /metrics on the web port behind an admin key; else its own loopback listener
    log_format: str = "text"
    # S3 front end
    s3_host: str = "127.0.0.1"
    s3_port: int = 9000
    s3_domain: str | None = None
    s3_rate_limit: str = "2000 per second"
    s3_failed_rate_limit: str = "120 per minute"  # per client address: unsigned or failed authentication
    s3_region: str = "us-east-1"
    secret_key: str | None = None
    multipart_abandon_s: float = 604800.0
    # lifecycle rules: how long a lifecycle "day" is (shortened in tests) and how often beat applies them
    lifecycle_day_s: float = 86400.0
    lifecycle_interval_s: float = 3600.0
    # chunk layout and chunking of new content
    ec: str = "2+1"
    scrub_mbps: float = 50.0
    scrub_period_s: float = 604800.0
    chunking: str = "fixed"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get("MINIS3_" + name)
            return value if value is None else value.strip()

        kwargs: dict = {}
        for field in dataclasses.fields(cls):
            raw = get(field.name.upper())
            if raw is None:
                continue
            kwargs[field.name] = _parse(field.name, field.type, raw)
        settings = cls(**kwargs)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not 1 <= self.port <= 65535:
            raise SettingsError(f"MINIS3_PORT must be 1..65535, got {self.port}")
        if self.chunk_size < 4096:
            raise SettingsError("MINIS3_CHUNK_SIZE must be at least 4096 bytes")
        if not self.nodes:
            raise SettingsError("MINIS3_NODES names no node directory")
        if len(set(self.nodes)) != len(self.nodes):
            raise SettingsError("MINIS3_NODES lists a directory twice")
        if self.max_upload_bytes < 0:
            raise SettingsError("MINIS3_MAX_UPLOAD_BYTES must be >= 0")
        if self.auth not in AUTH_MODES:
            raise SettingsError(f"MINIS3_AUTH must be one of {', '.join(AUTH_MODES)}")
        if self.gc_grace_s < 0 or self.gc_interval_s <= 0:
            raise SettingsError("MINIS3_GC_INTERVAL_S must be > 0 and MINIS3_GC_GRACE_S >= 0")
        if self.sample_interval_s < 1:
            raise SettingsError("MINIS3_SAMPLE_INTERVAL_S must be at least 1 second")
        if self.lifecycle_day_s <= 0 or self.lifecycle_interval_s <= 0:
            raise SettingsError("MINIS3_LIFECYCLE_DAY_S and MINIS3_LIFECYCLE_INTERVAL_S must be > 0")
        if self.gc_lock_ttl_s < 1:
            raise SettingsError("MINIS3_GC_LOCK_TTL_S must be at least 1 second")
        if self.manifest_page_size < 1:
            raise SettingsError("MINIS3_MANIFEST_PAGE_SIZE must be >= 1")
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(f"MINIS3_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
        if self.chunking not in CHUNKINGS:
            raise SettingsError(f"MINIS3_CHUNKING must be one of {', '.join(CHUNKINGS)}")
        if not 0 <= self.metrics_port <= 65535 or self.metrics_port == self.port:
            raise SettingsError(f"MINIS3_METRICS_PORT must be 0 (metrics on the web port) or another port "
                                f"1..65535, got {self.metrics_port}")
        if not 0 <= self.worker_nice <= 19:
            raise SettingsError(f"MINIS3_WORKER_NICE must be 0..19, got {self.worker_nice}")
        if not 1 <= self.s3_port <= 65535:
            raise SettingsError(f"MINIS3_S3_PORT must be 1..65535, got {self.s3_port}")
        k, m = self.ec_layout
        if len(self.nodes) < k + m:
            raise SettingsError(f"MINIS3_EC={self.ec} needs at least {k + m} nodes; MINIS3_NODES names "
                                f"{len(self.nodes)}")

    @property
    def ec_layout(self) -> tuple[int, int]:
        """(k, m) of MINIS3_EC: k data and m parity fragments per chunk; 1+0 is one whole copy."""
        k, sep, m = self.ec.partition("+")
        try:
            k_i, m_i = int(k), int(m)
        except ValueError:
            raise SettingsError(f"MINIS3_EC must read k+m (such as 2+1 or 4+2), got {self.ec!r}") from None
        if not sep or k_i < 1 or m_i < 0 or k_i + m_i > 32 or (m_i == 0 and k_i > 1):
            raise SettingsError(f"MINIS3_EC must read k+m with k >= 1, m >= 1 (or 1+0, one copy), k+m <= 32; "
                                f"got {self.ec!r}")
        return k_i, m_i

    def to_env(self) -> dict[str, str]:
        """The ``MINIS3_*`` variables that reproduce these settings in another process."""
        env = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = ",".join(str(v) for v in value)
            env["MINIS3_" + field.name.upper()] = str(value)
        return env

    def with_overrides(self, **changes) -> "Settings":
        settings = dataclasses.replace(self, **changes)
        settings.validate()
        return settings


def _parse(name: str, annotation: str, raw: str):
    try:
        if annotation == "int":
            return int(raw)
        if annotation == "float":
            return float(raw)
        if annotation.startswith("tuple[Path"):
            return tuple(Path(p.strip()) for p in raw.split(",") if p.strip())
        if annotation.startswith("tuple[str"):
            return tuple(p.strip() for p in raw.split(",") if p.strip())
        if annotation == "Path":
            return Path(raw)
        if annotation == "str | None":
            return raw or None
        return raw
    except ValueError:
        raise SettingsError(f"MINIS3_{name.upper()}: cannot read {raw!r} as {annotation}") from None
