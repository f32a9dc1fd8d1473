"""Object lock decisions (pipeline/namespace/retention.py), pure: what a version's retention and
legal hold allow, one rule per test."""
from __future__ import annotations

import pytest

from pipeline.errors import ObjectLocked
from pipeline.namespace.retention import (COMPLIANCE, DAY_S, GOVERNANCE, DefaultRetention, Retention,
                                          check_change, check_remove, default_of, enabled, is_locked,
                                          lock_config)

NOW = 1_800_000_000.0
LATER = NOW + 3600
SOONER = NOW + 60


def version(retention: Retention | None = None, hold: bool | None = None) -> dict:
    return {"key": "k", "versionId": "v", "retention": retention.to_mongo() if retention else None,
            "legalHold": hold}


def test_a_version_without_lock_is_removable():
    check_remove(version(), False, NOW)
    assert not is_locked(version(), NOW)


def test_a_legal_hold_refuses_removal_even_with_the_bypass():
    with pytest.raises(ObjectLocked):
        check_remove(version(hold=True), True, NOW)
    assert is_locked(version(hold=True), NOW)


def test_a_legal_hold_turned_off_no_longer_protects():
    check_remove(version(hold=False), False, NOW)


def test_governance_refuses_removal_without_the_bypass_and_allows_it_with():
    doc = version(Retention(GOVERNANCE, LATER))
    with pytest.raises(ObjectLocked):
        check_remove(doc, False, NOW)
    check_remove(doc, True, NOW)
    assert is_locked(doc, NOW)  # lifecycle and operators never bypass


def test_compliance_refuses_removal_whatever_the_request_says():
    doc = version(Retention(COMPLIANCE, LATER))
    for bypass in (False, True):
        with pytest.raises(ObjectLocked):
            check_remove(doc, bypass, NOW)


def test_a_retention_whose_date_has_passed_protects_nothing():
    doc = version(Retention(COMPLIANCE, NOW - 1))
    check_remove(doc, False, NOW)
    assert not is_locked(doc, NOW)


def test_a_retention_may_always_be_extended_in_its_mode():
    for mode in (GOVERNANCE, COMPLIANCE):
        check_change(Retention(mode, SOONER), Retention(mode, LATER), False, NOW)
        check_change(Retention(mode, LATER), Retention(mode, LATER), False, NOW)


def test_shortening_or_removing_governance_needs_the_bypass():
    current = Retention(GOVERNANCE, LATER)
    for wanted in (Retention(GOVERNANCE, SOONER), None, Retention(COMPLIANCE, LATER)):
        with pytest.raises(ObjectLocked):
            check_change(current, wanted, False, NOW)
        check_change(current, wanted, True, NOW)


def test_compliance_is_never_shortened_removed_or_weakened():
    current = Retention(COMPLIANCE, LATER)
    for wanted in (Retention(COMPLIANCE, SOONER), None, Retention(GOVERNANCE, LATER),
                   Retention(GOVERNANCE, LATER + 1)):
        for bypass in (False, True):
            with pytest.raises(ObjectLocked):
                check_change(current, wanted, bypass, NOW)


def test_an_expired_retention_may_be_changed_freely():
    check_change(Retention(COMPLIANCE, NOW - 1), Retention(GOVERNANCE, SOONER), False, NOW)
    check_change(None, Retention(COMPLIANCE, SOONER), False, NOW)


def test_default_retention_counts_days_or_years_from_creation():
    assert DefaultRetention(GOVERNANCE, days=2).retention_from(NOW) == Retention(GOVERNANCE, NOW + 2 * DAY_S)
    assert DefaultRetention(COMPLIANCE, years=1).retention_from(NOW) == Retention(COMPLIANCE, NOW + 365 * DAY_S)


def test_bucket_configuration_round_trips():
    config = lock_config(True, DefaultRetention(GOVERNANCE, days=1))
    assert enabled(config) and default_of(config) == DefaultRetention(GOVERNANCE, days=1)
    bare = lock_config(True, None)
    assert enabled(bare) and default_of(bare) is None
    assert not enabled(None)
