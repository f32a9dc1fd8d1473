"""Bucket lifecycle rules: parsed and checked once into types, matched against names, applied by beat.

A configuration arrives as a list of rules in S3's shape (``{"ID": ..., "Filter": {...},
"Expiration": {"Days": "30"}}``, every leaf a string, as the S3 front end reads it from XML) and
is checked as AWS checks it: the first fault found is the answer, a ``LifecycleInvalid`` whose
``kind`` is ``malformed`` (the document does not fit S3's schema), ``invalid_argument`` or
``invalid_request``, with AWS's message. It is stored as ``{"rules": [Rule.to_mongo(), ...]}``
in the bucket's ``lifecycle`` configuration.

What acts: ``Expiration`` by ``Days`` or ``Date`` on current objects (in a versioned bucket it
writes a delete marker), ``NoncurrentVersionExpiration`` and ``ExpiredObjectDeleteMarker`` on a
versioned bucket's version stacks, and ``AbortIncompleteMultipartUpload``. ``Transition``s are
checked, kept and returned, and never taken: this store has one storage class.

A lifecycle "day" is ``MINIS3_LIFECYCLE_DAY_S`` seconds (86,400). As S3, an object expires at
the first day boundary (midnight UTC for real days) at or after its last-modified time plus the
rule's days; an upload is aborted likewise, counted from its initiation.

``apply_lifecycle`` is one beat run: each bucket with rules is walked from a saved cursor, at most
``batch`` names per run, so that a bucket of a million keys takes a thousand runs, never one long
one; each run is recorded as a ``lifecycle`` event.
"""
from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pipeline.errors import BadRequest, ObjectLocked
from pipeline.namespace import retention

log = logging.getLogger(__name__)

MAX_RULES = 1000
MAX_ID_CHARS = 255
MAX_OBJECT_SIZE = 1099511627776000  # the bound S3 puts on the size filters (1,000 TiB)
STORAGE_CLASSES = ("GLACIER", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "DEEP_ARCHIVE", "GLACIER_IR")
INFREQUENT_ACCESS = ("STANDARD_IA", "ONEZONE_IA")  # S3 moves nothing there before 30 days
CONFIG = "lifecycle"
EVENT = "lifecycle"
BATCH = 1000  # names (and uploads) of one bucket looked at per run
EVENT_ENTRIES = 100  # (bucket, rule) entries kept in one run's event


class LifecycleInvalid(BadRequest):
    """The lifecycle configuration is not valid."""
    code = "invalid_lifecycle"

    MALFORMED, ARGUMENT, REQUEST = "malformed", "invalid_argument", "invalid_request"

    def __init__(self, kind: str, message: str | None = None, **details):
        super().__init__(message or "The XML you provided was not well-formed or did not validate against "
                                    "our published schema", **details)
        self.kind = kind


def _malformed(message: str | None = None) -> LifecycleInvalid:
    return LifecycleInvalid(LifecycleInvalid.MALFORMED, message)


def _argument(message: str) -> LifecycleInvalid:
    return LifecycleInvalid(LifecycleInvalid.ARGUMENT, message)


def _request(message: str) -> LifecycleInvalid:
    return LifecycleInvalid(LifecycleInvalid.REQUEST, message)


# --- types ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Filter:
    """Which current objects a rule applies to: all of prefix, tags and sizes must hold.

    ``form`` remembers how the owner wrote it, so that it reads back the same: ``legacy`` (the
    rule-level Prefix), ``all`` (an empty Filter), ``prefix``, ``tag``, ``greater``, ``less`` or
    ``and``."""
    form: str = "all"
    prefix: str = ""
    tags: tuple[tuple[str, str], ...] = ()
    size_greater_than: int | None = None
    size_less_than: int | None = None

    def matches(self, key: str, size: int, tags: dict[str, str]) -> bool:
        if not key.startswith(self.prefix):
            return False
        if any(tags.get(k) != v for k, v in self.tags):
            return False
        if self.size_greater_than is not None and not size > self.size_greater_than:
            return False
        if self.size_less_than is not None and not size < self.size_less_than:
            return False
        return True

    @property
    def uses_tags(self) -> bool:
        return bool(self.tags)

    @property
    def uses_sizes(self) -> bool:
        return self.size_greater_than is not None or self.size_less_than is not None


@dataclass(frozen=True)
class Transition:
    storage_class: str
    days: int | None = None
    date: float | None = None  # epoch seconds, midnight UTC
    newer_noncurrent_versions: int | None = None  # noncurrent transitions only


@dataclass(frozen=True)
class Rule:
    id: str
    enabled: bool
    filter: Filter
    expiration_days: int | None = None
    expiration_date: float | None = None  # epoch seconds, midnight UTC
    expired_object_delete_marker: bool | None = None
    noncurrent_days: int | None = None
    newer_noncurrent_versions: int | None = None
    abort_days: int | None = None
    transitions: tuple[Transition, ...] = ()
    noncurrent_transitions: tuple[Transition, ...] = ()

    @property
    def expires_current(self) -> bool:
        return self.expiration_days is not None or self.expiration_date is not None

    def expires_at(self, last_modified: float, day_s: float) -> float | None:
        """When a current object this rule matches expires; None when the rule expires none."""
        if self.expiration_date is not None:
            return self.expiration_date
        if self.expiration_days is not None:
            return day_boundary(last_modified + self.expiration_days * day_s, day_s)
        return None

    def abort_at(self, initiated: float, day_s: float) -> float | None:
        """When an incomplete multipart upload of a matching key is aborted; None when never."""
        if self.abort_days is None:
            return None
        return day_boundary(initiated + self.abort_days * day_s, day_s)

    def to_mongo(self) -> dict:
        f = self.filter
        return {"id": self.id, "enabled": self.enabled,
                "filter": {"form": f.form, "prefix": f.prefix, "tags": [list(t) for t in f.tags],
                           "gt": f.size_greater_than, "lt": f.size_less_than},
                "expirationDays": self.expiration_days, "expirationDate": self.expiration_date,
                "expiredObjectDeleteMarker": self.expired_object_delete_marker,
                "noncurrentDays": self.noncurrent_days, "newerNoncurrentVersions": self.newer_noncurrent_versions,
                "abortDays": self.abort_days,
                "transitions": [_transition_doc(t) for t in self.transitions],
                "noncurrentTransitions": [_transition_doc(t) for t in self.noncurrent_transitions]}

    @classmethod
    def from_mongo(cls, doc: dict) -> "Rule":
        f = doc["filter"]
        return cls(doc["id"], doc["enabled"],
                   Filter(f["form"], f["prefix"], tuple((k, v) for k, v in f["tags"]), f.get("gt"), f.get("lt")),
                   doc.get("expirationDays"), doc.get("expirationDate"), doc.get("expiredObjectDeleteMarker"),
                   doc.get("noncurrentDays"), doc.get("newerNoncurrentVersions"), doc.get("abortDays"),
                   tuple(_transition_of(t) for t in doc.get("transitions") or ()),
                   tuple(_transition_of(t) for t in doc.get("noncurrentTransitions") or ()))


def _transition_doc(t: Transition) -> dict:
    return {"class": t.storage_class, "days": t.days, "date": t.date, "newer": t.newer_noncurrent_versions}


def _transition_of(doc: dict) -> Transition:
    return Transition(doc["class"], doc.get("days"), doc.get("date"), doc.get("newer"))


def day_boundary(ts: float, day_s: float) -> float:
    """The first lifecycle-day boundary at or after ``ts`` (midnight UTC when a day is 86,400 s)."""
    return math.ceil(ts / day_s) * day_s


def rules_to_mongo(rules: list[Rule]) -> dict:
    return {"rules": [r.to_mongo() for r in rules]}


def rules_from_mongo(config: dict | None) -> list[Rule]:
    return [Rule.from_mongo(d) for d in (config or {}).get("rules") or ()]


def under_legal_hold_or_retention(doc: dict, now: float | None = None) -> bool:
    """Whether an object (a name's or a version's document) is under a legal hold or a retention
    period that has not passed by ``now``: no rule removes it (``pipeline.namespace.retention``)."""
    return retention.is_locked(doc, time.time() if now is None else now)


# --- checking a configuration ---------------------------------------------------------------------

def parse_rules(given: list[dict]) -> list[Rule]:
    """Typed rules from a configuration in S3's shape; LifecycleInvalid at the first fault, as AWS."""
    if not given:
        raise _malformed()
    if len(given) > MAX_RULES:
        raise _request(f"The number of lifecycle rules must not exceed the allowed limit of {MAX_RULES} rules.")
    ids: set[str] = set()
    for rule in given:
        rule_id = rule.get("ID")
        if rule_id:
            if len(rule_id) > MAX_ID_CHARS:
                raise _argument(f"ID length should not exceed allowed limit of {MAX_ID_CHARS}")
            if rule_id in ids:
                raise _argument("Rule ID must be unique. Found same ID for more than one rule")
            ids.add(rule_id)
    v2 = "Filter" in given[0]  # a configuration whose first rule has a Filter is "Lifecycle V2"
    return [_rule(rule, v2) for rule in given]


def _rule(given: dict, v2: bool) -> Rule:
    status = given.get("Status")
    if status not in ("Enabled", "Disabled"):
        raise _malformed()
    if "Prefix" in given and "Filter" in given:
        raise _malformed()
    if "Prefix" not in given and "Filter" not in given:
        raise _malformed()
    if "Prefix" in given and v2:
        raise _request("Base level prefix cannot be used in Lifecycle V2, prefixes are only supported in the Filter.")
    if "Filter" in given and not v2:
        raise _request("Filter element can only be used in Lifecycle V2.")
    scope = Filter("legacy", given["Prefix"]) if "Prefix" in given else _filter(given["Filter"])
    actions = ("Expiration", "NoncurrentVersionExpiration", "AbortIncompleteMultipartUpload", "Transitions",
               "NoncurrentVersionTransitions")
    if not any(a in given for a in actions):
        raise _request("At least one action needs to be specified in a rule")
    days = date = marker = None
    if "Expiration" in given:
        days, date, marker = _expiration(given["Expiration"])
    noncurrent_days = newer = None
    if "NoncurrentVersionExpiration" in given:
        nve = given["NoncurrentVersionExpiration"]
        if "NoncurrentDays" not in nve:
            raise _malformed()
        noncurrent_days = _positive(nve["NoncurrentDays"], "'NoncurrentDays' for NoncurrentVersionExpiration "
                                                           "action must be a positive integer")
        newer = _newer(nve.get("NewerNoncurrentVersions"), v2)
    abort_days = None
    if "AbortIncompleteMultipartUpload" in given:
        abort = given["AbortIncompleteMultipartUpload"]
        if "DaysAfterInitiation" not in abort:
            raise _malformed()
        abort_days = _positive(abort["DaysAfterInitiation"], "'DaysAfterInitiation' for "
                                                             "AbortIncompleteMultipartUpload action must be a "
                                                             "positive integer")
    for action, present in (("ExpiredObjectDeleteMarker", marker is not None),
                            ("AbortIncompleteMultipartUpload", abort_days is not None)):
        if present and scope.uses_tags:
            raise _request(f"{action} cannot be specified with Tags.")
        if present and scope.uses_sizes:
            raise _request(f"{action} cannot be specified with Object Size.")
    transitions = _transitions(given.get("Transitions") or [], date is not None, days is not None)
    noncurrent_transitions = _noncurrent_transitions(given.get("NoncurrentVersionTransitions") or [], v2)
    return Rule(given.get("ID") or _new_id(), status == "Enabled", scope, days, date, marker, noncurrent_days,
                newer, abort_days, transitions, noncurrent_transitions)


def _new_id() -> str:
    """What S3 names a rule given without an ID: a random string."""
    return secrets.token_urlsafe(36)


def _filter(given: dict) -> Filter:
    present = [k for k in ("Prefix", "Tag", "ObjectSizeGreaterThan", "ObjectSizeLessThan", "And") if k in given]
    if not present:
        return Filter("all")
    if len(present) > 1:  # several conditions go under And
        raise _malformed()
    what = present[0]
    if what == "Prefix":
        return Filter("prefix", given["Prefix"])
    if what == "Tag":
        return Filter("tag", tags=(_tag(given["Tag"]),))
    if what == "ObjectSizeGreaterThan":
        return _sizes(Filter("greater", size_greater_than=_greater(given[what])))
    if what == "ObjectSizeLessThan":
        return _sizes(Filter("less", size_less_than=_less(given[what])))
    conj = given["And"]
    tags = tuple(_tag(t) for t in conj.get("Tags") or ())
    keys = [k for k, _ in tags]
    if len(set(keys)) != len(keys):
        raise _request("Duplicate Tag Keys are not allowed.")
    gt = _greater(conj["ObjectSizeGreaterThan"]) if "ObjectSizeGreaterThan" in conj else None
    lt = _less(conj["ObjectSizeLessThan"]) if "ObjectSizeLessThan" in conj else None
    return _sizes(Filter("and", conj.get("Prefix") or "", tags, gt, lt))


def _tag(given: dict) -> tuple[str, str]:
    key, value = given.get("Key"), given.get("Value")
    if not key or value is None:
        raise _malformed()
    return key, value


def _integer(text: str) -> int:
    try:
        return int(text.strip())
    except (ValueError, AttributeError):
        raise _malformed() from None


def _greater(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= MAX_OBJECT_SIZE:
        raise _request(f"'ObjectSizeGreaterThan' should be between 0 and {MAX_OBJECT_SIZE}.")
    return value


def _less(text: str) -> int:
    value = _integer(text)
    if not 1 <= value <= MAX_OBJECT_SIZE:
        raise _request(f"'ObjectSizeLessThan' should be between 1 and {MAX_OBJECT_SIZE}.")
    return value


def _sizes(f: Filter) -> Filter:
    if f.size_greater_than is not None and f.size_less_than is not None \
            and f.size_less_than <= f.size_greater_than:
        raise _request("'ObjectSizeLessThan' has to be a value greater than 'ObjectSizeGreaterThan'.")
    return f


def _positive(text: str, message: str) -> int:
    value = _integer(text)
    if value <= 0:
        raise _argument(message)
    return value


def _newer(text: str | None, v2: bool) -> int | None:
    if text is None:
        return None
    if not v2:
        raise _request("NewerNoncurrentVersions element can only be used in Lifecycle V2.")
    return _positive(text, "'NewerNoncurrentVersions' must be a positive integer")


def parse_date(text: str) -> float:
    """Epoch seconds of an ISO 8601 ``Date``; it must be midnight UTC (InvalidArgument), and a date at
    all (MalformedXML)."""
    value = text.strip()
    try:
        if value.endswith(("Z", "z")):
            value = value[:-1] + "+00:00"
        at = datetime.fromisoformat(value)
    except ValueError:
        raise _malformed() from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    ts = at.timestamp()
    if ts % 86400 != 0:
        raise _argument("'Date' must be at midnight GMT")
    return ts


def _expiration(given: dict) -> tuple[int | None, float | None, bool | None]:
    present = [k for k in ("Days", "Date", "ExpiredObjectDeleteMarker") if k in given]
    if len(present) != 1:
        raise _malformed()
    if "Days" in given:
        return _positive(given["Days"], "'Days' for Expiration action must be a positive integer"), None, None
    if "Date" in given:
        return None, parse_date(given["Date"]), None
    marker = given["ExpiredObjectDeleteMarker"].strip().lower()
    if marker not in ("true", "false"):
        raise _malformed()
    return None, None, marker == "true"


def _storage_class(given: dict) -> str:
    storage_class = (given.get("StorageClass") or "").strip()
    if storage_class not in STORAGE_CLASSES:
        raise _malformed()
    return storage_class


def _transitions(given: list[dict], dated: bool, counted: bool) -> tuple[Transition, ...]:
    out, classes = [], set()
    for t in given:
        storage_class = _storage_class(t)
        if ("Days" in t) == ("Date" in t):
            raise _malformed()
        if "Date" in t:
            out.append(Transition(storage_class, date=parse_date(t["Date"])))
            dated = True
        else:
            days = _integer(t["Days"])
            if days < 0:
                raise _argument("'Days' in Transition action must be greater than or equal to 0")
            if days < 30 and storage_class in INFREQUENT_ACCESS:
                raise _argument(f"'Days' in Transition action must be greater than or equal to 30 for "
                                f"storageClass '{storage_class}'")
            out.append(Transition(storage_class, days=days))
            counted = True
        if storage_class in classes:
            raise _request("'StorageClass' must be different for 'Transition' actions in same 'Rule'")
        classes.add(storage_class)
    if dated and counted:
        raise _request("Found mixed 'Date' and 'Days' based Expiration and Transition actions in lifecycle rule")
    return tuple(out)


def _noncurrent_transitions(given: list[dict], v2: bool) -> tuple[Transition, ...]:
    out, classes = [], set()
    for t in given:
        storage_class = _storage_class(t)
        if "NoncurrentDays" not in t:
            raise _malformed()
        days = _integer(t["NoncurrentDays"])
        if days < 0:
            raise _argument("'NoncurrentDays' in NoncurrentVersionTransition action must be greater than or "
                            "equal to 0")
        if storage_class in classes:
            raise _request("'StorageClass' must be different for 'NoncurrentVersionTransition' actions in same "
                           "'Rule'")
        classes.add(storage_class)
        out.append(Transition(storage_class, days=days,
                              newer_noncurrent_versions=_newer(t.get("NewerNoncurrentVersions"), v2)))
    return tuple(out)


# --- matching -------------------------------------------------------------------------------------

def expiring_rule(rules: list[Rule], key: str, size: int, tags: dict[str, str], last_modified: float,
                  now: float, day_s: float) -> Rule | None:
    """The first enabled rule under which a current object has expired by ``now``; None if none has."""
    for rule in rules:
        if not rule.enabled or not rule.expires_current or not rule.filter.matches(key, size, tags):
            continue
        at = rule.expires_at(last_modified, day_s)
        if at is not None and at <= now:
            return rule
    return None


def current_expiration(rules: list[Rule], key: str, size: int, tags: dict[str, str], last_modified: float,
                       day_s: float) -> tuple[float, str] | None:
    """When a current object will expire and under which rule (the earliest of the enabled rules
    that match it): what S3 answers in ``x-amz-expiration``. None when no rule expires it."""
    soonest: tuple[float, str] | None = None
    for rule in rules:
        if not rule.enabled or not rule.expires_current or not rule.filter.matches(key, size, tags):
            continue
        at = rule.expires_at(last_modified, day_s)
        if at is not None and (soonest is None or at < soonest[0]):
            soonest = (at, rule.id)
    return soonest


def aborting_rule(rules: list[Rule], key: str, initiated: float, now: float, day_s: float) -> Rule | None:
    """The first enabled rule under which an incomplete upload of ``key`` is due to be aborted."""
    for rule in rules:
        if not rule.enabled or rule.abort_days is None or not key.startswith(rule.filter.prefix):
            continue
        at = rule.abort_at(initiated, day_s)
        if at is not None and at <= now:
            return rule
    return None


# --- one beat run ---------------------------------------------------------------------------------

@dataclass
class BucketRun:
    """What one run did in one bucket: per rule id, objects expired and uploads aborted."""
    bucket: str
    expired: dict[str, int] = field(default_factory=dict)
    aborted: dict[str, int] = field(default_factory=dict)
    names_seen: int = 0
    pass_complete: bool = False  # the walk reached the bucket's last name; the next run starts over

    def entries(self) -> list[dict]:
        rules = list(dict.fromkeys([*self.expired, *self.aborted]))
        return [{"bucket": self.bucket, "rule": r, "expired": self.expired.get(r, 0),
                 "aborted": self.aborted.get(r, 0)} for r in rules]


def apply_lifecycle(names, day_s: float, batch: int = BATCH, now: float | None = None) -> dict:
    """One run over every bucket with a lifecycle configuration (``names``: an ObjectNames); records
    and returns what it removed."""
    started = time.time()
    now = started if now is None else now
    runs: list[BucketRun] = []
    after = None
    while True:
        page = names.namespace.buckets_with_config(CONFIG, after, 500)
        for bucket_doc in page:
            runs.append(_apply_to_bucket(names, bucket_doc, now, day_s, batch))
        if len(page) < 500:
            break
        after = page[-1]["_id"]
    entries = [e for run in runs for e in run.entries()]
    summary = {"started": started, "buckets": len(runs),
               "expired": sum(e["expired"] for e in entries), "aborted": sum(e["aborted"] for e in entries),
               "completed": [run.bucket for run in runs if run.pass_complete][:EVENT_ENTRIES],
               "rules": entries[:EVENT_ENTRIES]}
    if runs:
        names.operations.record_event(EVENT, summary)
    if entries:
        log.info("lifecycle: %d object(s) expired, %d upload(s) aborted in %d bucket(s)", summary["expired"],
                 summary["aborted"], len(runs))
    return summary


def _apply_to_bucket(names, bucket_doc: dict, now: float, day_s: float, batch: int) -> BucketRun:
    bucket, tenant = bucket_doc["_id"], bucket_doc["tenant"]
    run = BucketRun(bucket)
    rules = [r for r in rules_from_mongo((bucket_doc.get("config") or {}).get(CONFIG)) if r.enabled]
    cursor = bucket_doc.get("lifecycleCursor") or {}
    if any(r.expires_current for r in rules):
        versioned = names.versioning(bucket) is not None
        after_key = cursor.get("key")
        docs = names.namespace.object_names(bucket + "/" + (after_key or ""), bucket + "0", batch,
                                            low_inclusive=after_key is None)
        run.names_seen = len(docs)
        for doc in docs:
            rule = expiring_rule(rules, doc["key"], doc["size"], dict(doc.get("tags") or ()), doc["created"],
                                 now, day_s)
            # in a versioned bucket an expiration writes a delete marker, which removes no version (S3
            # does so under object lock too); elsewhere it removes the object
            if rule is None or (not versioned and under_legal_hold_or_retention(doc, now)):
                continue
            if names.expire(tenant, bucket, doc["key"], doc["file"]):
                run.expired[rule.id] = run.expired.get(rule.id, 0) + 1
        run.pass_complete = len(docs) < batch
        cursor["key"] = None if run.pass_complete else docs[-1]["key"]
    else:
        run.pass_complete = True
        cursor["key"] = None
    if names.versioning(bucket) is not None and any(
            r.noncurrent_days is not None or r.expired_object_delete_marker for r in rules):
        run.pass_complete = _expire_versions(names, bucket, rules, cursor, now, day_s, batch, run) \
            and run.pass_complete
    if any(r.abort_days is not None for r in rules):
        after_upload = cursor.get("upload")
        uploads = names.namespace.uploads_page(bucket, after_upload, batch)
        for upload in uploads:
            rule = aborting_rule(rules, upload["key"], upload["created"], now, day_s)
            if rule is None:
                continue
            if names.abort_if_present(tenant, bucket, upload["key"], upload["_id"]):
                run.aborted[rule.id] = run.aborted.get(rule.id, 0) + 1
        cursor["upload"] = None if len(uploads) < batch else uploads[-1]["_id"]
        run.pass_complete = run.pass_complete and len(uploads) < batch
    names.namespace.set_lifecycle_cursor(bucket, cursor)
    return run


def _remove_version(versions, nid: str, version_id: str) -> bool:
    """Remove a noncurrent version unless object lock protects it by the clock's now (a run told of
    a later ``now`` may think a retention over that is not)."""
    try:
        versions.delete_version(nid, version_id)
    except ObjectLocked:
        return False
    return True


def _expire_versions(names, bucket: str, rules: list[Rule], cursor: dict, now: float, day_s: float,
                     batch: int, run: BucketRun) -> bool:
    """NoncurrentVersionExpiration (``NoncurrentDays`` after the version became noncurrent, keeping
    ``NewerNoncurrentVersions`` newer ones) and ExpiredObjectDeleteMarker (a marker left alone), over
    whole keys' version stacks from ``cursor["versionKey"]``; True when the walk reached the end."""
    versions = names.versions
    after_key = cursor.get("versionKey")
    low = bucket + "/" + (after_key + "\x01" if after_key is not None else "")
    docs = versions.versions.page(low, bucket + "0", batch)
    complete = len(docs) < batch
    stacks: dict[str, list[dict]] = {}
    for doc in docs:
        stacks.setdefault(doc["key"], []).append(doc)
    if not complete and len(stacks) > 1:
        stacks.popitem()  # the last key's stack may go on past this batch: the next run takes it whole
    for key, stack in stacks.items():
        nid = f"{bucket}/{key}"
        became_noncurrent = stack[0]["created"]  # newest first: each version is noncurrent from its successor
        kept = 1
        for number, doc in enumerate(stack[1:], start=1):
            rule = next((r for r in rules if r.noncurrent_days is not None and r.filter.matches(
                key, doc.get("size") or 0, dict(doc.get("tags") or ()))), None)
            due = rule is not None and day_boundary(became_noncurrent + rule.noncurrent_days * day_s, day_s) <= now
            became_noncurrent = doc["created"]
            if due and number > (rule.newer_noncurrent_versions or 0) and not under_legal_hold_or_retention(doc, now) \
                    and _remove_version(versions, nid, doc["versionId"]):
                run.expired[rule.id] = run.expired.get(rule.id, 0) + 1
            else:
                kept += 1
        latest = stack[0]
        if kept == 1 and latest.get("marker"):
            rule = next((r for r in rules if r.expired_object_delete_marker and key.startswith(r.filter.prefix)), None)
            if rule is not None:
                versions.delete_version(nid, latest["versionId"])
                run.expired[rule.id] = run.expired.get(rule.id, 0) + 1
    cursor["versionKey"] = None if complete or not stacks else next(reversed(stacks))
    return complete
