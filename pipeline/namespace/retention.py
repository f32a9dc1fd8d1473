"""Object lock (WORM): what a version's retention and legal hold allow. Pure: no MongoDB, no clock
of its own (every decision takes ``now``), so each rule is tested on its own.

A bucket's ``objectLock`` configuration is ``{"enabled": True, "rule": {"mode", "days", "years"}
or None}``; it is only ever enabled on a bucket whose versioning is Enabled, and its versioning
can then never be suspended. A version (and the current name, when it is that version) carries
``retention`` (``{"mode": GOVERNANCE|COMPLIANCE, "until": epoch seconds}``) and ``legalHold``
(True, False or None for never set).

What S3 allows, and this module decides:
- a version under a legal hold, or whose retention date has not passed, is never removed; a
  GOVERNANCE retention yields to ``x-amz-bypass-governance-retention: true``, a COMPLIANCE one to
  nothing (a delete marker is not a removal: DeleteObject without a version id is allowed);
- an active retention may be extended in its mode; any other change (a shorter date, COMPLIANCE to
  GOVERNANCE, GOVERNANCE to COMPLIANCE, removal) needs the bypass for GOVERNANCE and is never
  allowed for COMPLIANCE;
- a new version without a mode of its own takes the bucket's default retention, counted from its
  creation (a year is 365 days).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ObjectLocked

CONFIG = "objectLock"
GOVERNANCE, COMPLIANCE = "GOVERNANCE", "COMPLIANCE"
MODES = (GOVERNANCE, COMPLIANCE)
DAY_S = 86_400
YEAR_DAYS = 365


@dataclass(frozen=True)
class Retention:
    mode: str
    until: float  # epoch seconds

    def to_mongo(self) -> dict:
        return {"mode": self.mode, "until": self.until}

    @classmethod
    def from_mongo(cls, doc: dict | None) -> "Retention | None":
        return cls(doc["mode"], float(doc["until"])) if doc else None

    def active(self, now: float) -> bool:
        return self.until > now


@dataclass(frozen=True)
class DefaultRetention:
    """A bucket's default: a mode and exactly one of days or years, positive."""
    mode: str
    days: int | None = None
    years: int | None = None

    def to_mongo(self) -> dict:
        return {"mode": self.mode, "days": self.days, "years": self.years}

    @classmethod
    def from_mongo(cls, doc: dict | None) -> "DefaultRetention | None":
        return cls(doc["mode"], doc.get("days"), doc.get("years")) if doc else None

    def retention_from(self, created: float) -> Retention:
        days = self.days if self.days is not None else (self.years or 0) * YEAR_DAYS
        return Retention(self.mode, created + days * DAY_S)


def lock_config(enabled: bool, default: DefaultRetention | None) -> dict:
    return {"enabled": enabled, "rule": default.to_mongo() if default else None}


def default_of(config: dict | None) -> DefaultRetention | None:
    return DefaultRetention.from_mongo((config or {}).get("rule"))


def enabled(config: dict | None) -> bool:
    return bool((config or {}).get("enabled"))


def retention_of(doc: dict) -> Retention | None:
    return Retention.from_mongo(doc.get("retention"))


def legal_hold_of(doc: dict) -> bool | None:
    """A version's legal hold: None when never set (the stand-in reads a boolean back as 0 or 1)."""
    value = doc.get("legalHold")
    return None if value is None else bool(value)


def is_locked(doc: dict, now: float) -> bool:
    """Whether a version (its document) may not be removed by anyone now: a legal hold or an
    unexpired retention of either mode. What lifecycle, GC's operators and /api ask."""
    if doc.get("legalHold"):
        return True
    retention = retention_of(doc)
    return retention is not None and retention.active(now)


def check_remove(doc: dict, bypass_governance: bool, now: float) -> None:
    """Refuse (ObjectLocked) the removal of a version S3 would not remove."""
    if doc.get("legalHold"):
        raise ObjectLocked("Access Denied because object protected by object lock (legal hold).",
                           key=doc.get("key"), versionId=doc.get("versionId"))
    retention = retention_of(doc)
    if retention is None or not retention.active(now):
        return
    if retention.mode == GOVERNANCE and bypass_governance:
        return
    raise ObjectLocked("Access Denied because object protected by object lock.", key=doc.get("key"),
                       versionId=doc.get("versionId"))


def check_change(current: Retention | None, wanted: Retention | None, bypass_governance: bool,
                 now: float) -> None:
    """Refuse (ObjectLocked) a PutObjectRetention S3 would refuse: ``wanted`` None removes it."""
    if current is None or not current.active(now):
        return
    if wanted is not None and wanted.mode == current.mode and wanted.until >= current.until:
        return  # an extension in the same mode: always allowed
    if current.mode == GOVERNANCE and bypass_governance:
        return
    raise ObjectLocked("Access Denied because object protected by object lock.")
