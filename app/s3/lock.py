"""Object lock (WORM) on the wire: Put/GetObjectLockConfiguration (``?object-lock``),
Put/GetObjectRetention (``?retention``), Put/GetObjectLegalHold (``?legal-hold``), the
``x-amz-object-lock-*`` headers of PutObject, CopyObject and CreateMultipartUpload, the lock headers
of GET and HEAD, and ``x-amz-bypass-governance-retention``.

This module reads and writes the XML and the headers with S3's error codes;
``pipeline.namespace.retention`` decides what a retention or a legal hold allows, and
``pipeline.namespace.objects`` keeps them (a bucket's ``objectLock`` configuration; a version's
``retention`` and ``legalHold``).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

from flask import Response

from app.s3.access import require
from app.s3.errors import AccessDenied, InvalidArgument, InvalidRequest, InvalidRetentionPeriod, MalformedXML
from app.s3.request import S3Call, empty_answer, xml_answer
from app.s3.xmlio import _Doc, _local, _parse
from pipeline.namespace import retention as lock
from pipeline.namespace.objects import ObjectAttributes, ObjectInfo
from pipeline.timefmt import iso8601

MAX_LOCK_XML = 64 * 1024
MAX_DAYS, MAX_YEARS = 36_500, 100  # S3's bounds on a default retention
MODE_HEADER = "x-amz-object-lock-mode"
UNTIL_HEADER = "x-amz-object-lock-retain-until-date"
HOLD_HEADER = "x-amz-object-lock-legal-hold"
BYPASS_HEADER = "x-amz-bypass-governance-retention"
ON, OFF = "ON", "OFF"


# --- reading ---------------------------------------------------------------------------------------

def parse_date(text: str) -> float | None:
    """Epoch seconds of an ISO 8601 date-time (``2030-01-01T00:00:00Z``, with or without a
    fraction or an offset; UTC when it names no zone), to the millisecond an answer shows, so that
    a date read back and sent again is the same date; None when it is not one."""
    value = (text or "").strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return round(at.timestamp(), 3)


def _only(element, allowed: set[str]) -> dict:
    """The element's children by name, each at most once and among ``allowed``; MalformedXML else."""
    found: dict = {}
    for child in element:
        name = _local(child.tag)
        if name not in allowed or name in found:
            raise MalformedXML()
        found[name] = child
    return found


def _text(element) -> str:
    if len(element):
        raise MalformedXML()
    return (element.text or "").strip()


def _mode(text: str) -> str:
    if text not in lock.MODES:  # case matters: "governance" is refused, as S3 does
        raise MalformedXML()
    return text


def _period(text: str, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise MalformedXML() from None
    if value <= 0:
        raise InvalidRetentionPeriod("Default retention period must be a positive integer value.")
    if value > high:
        raise InvalidRetentionPeriod("Default retention period is too large.")
    return value


def parse_lock_configuration(body: bytes) -> lock.DefaultRetention | None:
    """The default retention of an ObjectLockConfiguration (None: a configuration without a Rule)."""
    root = _only(_parse(body, MAX_LOCK_XML, "ObjectLockConfiguration"), {"ObjectLockEnabled", "Rule"})
    if "ObjectLockEnabled" not in root or _text(root["ObjectLockEnabled"]) != "Enabled":
        raise MalformedXML()
    if "Rule" not in root:
        return None
    rule = _only(root["Rule"], {"DefaultRetention"})
    if "DefaultRetention" not in rule:
        raise MalformedXML()
    given = _only(rule["DefaultRetention"], {"Mode", "Days", "Years"})
    if "Mode" not in given or ("Days" in given) == ("Years" in given):
        raise MalformedXML()
    mode = _mode(_text(given["Mode"]))
    if "Days" in given:
        return lock.DefaultRetention(mode, days=_period(_text(given["Days"]), MAX_DAYS))
    return lock.DefaultRetention(mode, years=_period(_text(given["Years"]), MAX_YEARS))


def _future(until: float, now: float) -> float:
    if until <= now:
        raise InvalidArgument("The retain until date must be in the future!", ArgumentName="RetainUntilDate")
    return until


def parse_retention(body: bytes, now: float) -> lock.Retention | None:
    """A Retention document; None for one with neither Mode nor RetainUntilDate (removal)."""
    given = _only(_parse(body, MAX_LOCK_XML, "Retention"), {"Mode", "RetainUntilDate"})
    if not given:
        return None
    if len(given) != 2:
        raise MalformedXML()
    mode = _mode(_text(given["Mode"]))
    until = parse_date(_text(given["RetainUntilDate"]))
    if until is None:
        raise MalformedXML()
    return lock.Retention(mode, _future(until, now))


def parse_legal_hold(body: bytes) -> bool:
    given = _only(_parse(body, MAX_LOCK_XML, "LegalHold"), {"Status"})
    status = _text(given["Status"]) if "Status" in given else None
    if status not in (ON, OFF):
        raise MalformedXML()
    return status == ON


def header_lock(call: S3Call, attrs: ObjectAttributes | None = None) -> tuple[dict | None, bool | None]:
    """(retention, legal hold) of the ``x-amz-object-lock-*`` headers of a write, checked before its
    body is read; set on ``attrs`` when given. InvalidRequest in a bucket without object lock;
    AccessDenied for a writer other than the owner whom the bucket policy does not also allow
    s3:PutObjectRetention / s3:PutObjectLegalHold, as S3."""
    mode, until_text, hold = call.header(MODE_HEADER), call.header(UNTIL_HEADER), call.header(HOLD_HEADER)
    if mode is None and until_text is None and hold is None:
        return None, None
    retention, legal_hold = None, None
    if (mode is None) != (until_text is None):
        raise InvalidArgument("x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be "
                              "supplied", ArgumentName=MODE_HEADER if mode is None else UNTIL_HEADER)
    if mode is not None:
        if mode not in lock.MODES:
            raise InvalidArgument("Unknown wormMode directive.", ArgumentName=MODE_HEADER, ArgumentValue=mode)
        until = parse_date(until_text)
        if until is None:
            raise InvalidArgument("The retain until date must be provided in ISO 8601 format",
                                  ArgumentName=UNTIL_HEADER, ArgumentValue=until_text)
        retention = lock.Retention(mode, _future(until, time.time())).to_mongo()
    if hold is not None:
        if hold not in (ON, OFF):
            raise InvalidArgument("Legal Hold must be either of 'ON' or 'OFF'", ArgumentName=HOLD_HEADER,
                                  ArgumentValue=hold)
        legal_hold = hold == ON
    if not lock.enabled(call.names.object_lock(call.bucket)):
        raise InvalidRequest("Bucket is missing ObjectLockConfiguration")
    # a writer who is not the owner also needs the permissions of the calls these headers stand for
    if call.requester != call.tenant:
        if retention is not None:
            require(call, "s3:PutObjectRetention", call.bucket, call.key)
        if legal_hold is not None:
            require(call, "s3:PutObjectLegalHold", call.bucket, call.key)
    if attrs is not None:
        attrs.retention, attrs.legal_hold = retention, legal_hold
    return retention, legal_hold


def bypass_governance(call: S3Call, key: str | None) -> bool:
    """``x-amz-bypass-governance-retention: true``, from a caller allowed s3:BypassGovernanceRetention
    (the bucket owner always is; anyone else by the bucket policy). Ignored otherwise, as in S3."""
    if (call.header(BYPASS_HEADER) or "").lower() != "true":
        return False
    if call.requester is not None and call.requester == call.tenant:
        return True
    try:
        require(call, "s3:BypassGovernanceRetention", call.bucket, key)
    except AccessDenied:
        return False
    return True


# --- answering -------------------------------------------------------------------------------------

def lock_headers(info: ObjectInfo) -> dict:
    """The object lock headers of a GET or HEAD of a version that has a retention or a legal hold."""
    headers = {}
    if info.retention is not None:
        headers[MODE_HEADER] = info.retention.mode
        headers[UNTIL_HEADER] = iso8601(info.retention.until)
    if info.legal_hold is not None:
        headers[HOLD_HEADER] = ON if info.legal_hold else OFF
    return headers


def lock_configuration_xml(config: dict) -> bytes:
    doc = _Doc("ObjectLockConfiguration").el("ObjectLockEnabled", "Enabled")
    default = lock.default_of(config)
    if default is not None:
        doc.open("Rule").open("DefaultRetention").el("Mode", default.mode).el("Days", default.days)
        doc.el("Years", default.years).close("DefaultRetention").close("Rule")
    return doc.bytes()


def _version(call: S3Call) -> str | None:
    from app.s3.objects import check_version  # app.s3.objects imports this module

    return check_version(call)


def put_object_lock_configuration(call: S3Call) -> Response:
    call.names.bucket(call.tenant, call.bucket)  # NoSuchBucket / AccessDenied before the body
    default = parse_lock_configuration(call.small_body(MAX_LOCK_XML))
    call.names.set_object_lock(call.tenant, call.bucket, default)
    return empty_answer(200)


def get_object_lock_configuration(call: S3Call) -> Response:
    return xml_answer(lock_configuration_xml(call.names.get_object_lock(call.tenant, call.bucket)))


def put_object_retention(call: S3Call) -> Response:
    version = _version(call)
    call.names.lock_state(call.tenant, call.bucket, call.key, version)  # InvalidRequest, NoSuchKey before the body
    wanted = parse_retention(call.small_body(MAX_LOCK_XML), time.time())
    call.names.set_retention(call.tenant, call.bucket, call.key, version, wanted,
                             bypass_governance(call, call.key))
    return empty_answer(200)


def get_object_retention(call: S3Call) -> Response:
    info = call.names.retention(call.tenant, call.bucket, call.key, _version(call))
    doc = _Doc("Retention").el("Mode", info.retention.mode).el("RetainUntilDate", iso8601(info.retention.until))
    return xml_answer(doc.bytes())


def put_object_legal_hold(call: S3Call) -> Response:
    version = _version(call)
    call.names.lock_state(call.tenant, call.bucket, call.key, version)
    on = parse_legal_hold(call.small_body(MAX_LOCK_XML))
    call.names.set_legal_hold(call.tenant, call.bucket, call.key, version, on)
    return empty_answer(200)


def get_object_legal_hold(call: S3Call) -> Response:
    info = call.names.legal_hold(call.tenant, call.bucket, call.key, _version(call))
    return xml_answer(_Doc("LegalHold").el("Status", ON if info.legal_hold else OFF).bytes())

