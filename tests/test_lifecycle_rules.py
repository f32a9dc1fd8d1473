"""Lifecycle rules alone (pipeline.namespace.lifecycle): checking a configuration as AWS does, matching and
timing, and the typed rules' round trip through MongoDB's shape. No service runs."""
from __future__ import annotations

import pytest

from pipeline.namespace.lifecycle import (LifecycleInvalid, Rule, aborting_rule, day_boundary, expiring_rule, parse_rules,
                                rules_from_mongo, rules_to_mongo)

DAY = 86400.0
MIDNIGHT_2020 = 1577836800.0  # 2020-01-01T00:00:00Z


def rule(**fields) -> dict:
    base = {"ID": "r", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": "1"}}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def fault(given: list[dict]) -> tuple[str, str]:
    with pytest.raises(LifecycleInvalid) as info:
        parse_rules(given)
    return info.value.kind, info.value.message


def test_every_filter_form_parses_and_round_trips_through_the_stored_shape():
    rules = parse_rules([
        rule(ID="legacy", Filter=None, Prefix="logs/"),
        rule(ID="prefix", Filter={"Prefix": "tmp/"}),
        rule(ID="tag", Filter={"Tag": {"Key": "class", "Value": "temp"}}),
        rule(ID="big", Filter={"ObjectSizeGreaterThan": "1000"}),
        rule(ID="small", Filter={"ObjectSizeLessThan": "10"}),
        rule(ID="and", Filter={"And": {"Prefix": "a/", "Tags": [{"Key": "k", "Value": "v"}, {"Key": "j", "Value": ""}],
                                       "ObjectSizeGreaterThan": "1", "ObjectSizeLessThan": "5"}}),
        rule(ID="dated", Expiration={"Date": "2020-01-01T00:00:00.000Z"}),
        rule(ID="abort", Expiration=None, AbortIncompleteMultipartUpload={"DaysAfterInitiation": "7"}),
        rule(ID="versions", Expiration=None,
             NoncurrentVersionExpiration={"NoncurrentDays": "3", "NewerNoncurrentVersions": "2"}),
        rule(ID="moved", Transitions=[{"Days": "30", "StorageClass": "STANDARD_IA"},
                                      {"Days": "90", "StorageClass": "GLACIER"}]),
    ][1:])  # the legacy form cannot share a configuration with Filters: checked below
    assert [r.filter.form for r in rules] == ["prefix", "tag", "greater", "less", "and", "all", "all", "all", "all"]
    assert rules[4].filter.tags == (("k", "v"), ("j", ""))
    assert rules[5].expiration_date == MIDNIGHT_2020
    assert rules[6].abort_days == 7 and rules[7].newer_noncurrent_versions == 2
    assert [t.storage_class for t in rules[8].transitions] == ["STANDARD_IA", "GLACIER"]
    assert rules_from_mongo(rules_to_mongo(rules)) == rules
    legacy = parse_rules([rule(Filter=None, Prefix="logs/")])[0]
    assert legacy.filter.form == "legacy" and legacy.filter.prefix == "logs/"


def test_a_rule_without_an_id_gets_one_of_its_own():
    first, second = parse_rules([rule(ID=None), rule(ID=None)])
    assert first.id and second.id and first.id != second.id


@pytest.mark.parametrize("given, kind, message", [
    ([rule(Status="enabled")], "malformed", None),
    ([rule(Filter=None)], "malformed", None),
    ([rule(Prefix="a/")], "malformed", None),
    ([rule(Filter={"Prefix": "a", "Tag": {"Key": "k", "Value": "v"}})], "malformed", None),
    ([rule(Expiration={"Days": "1", "Date": "2020-01-01T00:00:00Z"})], "malformed", None),
    ([rule(Expiration={"Days": "one"})], "malformed", None),
    ([rule(Expiration={"Date": "yesterday"})], "malformed", None),
    ([rule(Expiration=None, AbortIncompleteMultipartUpload={})], "malformed", None),
    ([rule(Expiration=None, Transitions=[{"Days": "40", "StorageClass": "REDUCED_REDUNDANCY"}])], "malformed", None),
    ([], "malformed", None),
    ([rule(ID="x" * 256)], "invalid_argument", "ID length should not exceed allowed limit of 255"),
    ([rule(ID="same"), rule(ID="same")], "invalid_argument",
     "Rule ID must be unique. Found same ID for more than one rule"),
    ([rule(Expiration={"Days": "0"})], "invalid_argument", "'Days' for Expiration action must be a positive integer"),
    ([rule(Expiration={"Date": "2020-01-01T12:00:00Z"})], "invalid_argument", "'Date' must be at midnight GMT"),
    ([rule(Expiration=None, AbortIncompleteMultipartUpload={"DaysAfterInitiation": "0"})], "invalid_argument",
     "'DaysAfterInitiation' for AbortIncompleteMultipartUpload action must be a positive integer"),
    ([rule(Expiration=None, NoncurrentVersionExpiration={"NoncurrentDays": "-1"})], "invalid_argument",
     "'NoncurrentDays' for NoncurrentVersionExpiration action must be a positive integer"),
    ([rule(Expiration=None, Transitions=[{"Days": "10", "StorageClass": "STANDARD_IA"}])], "invalid_argument",
     "'Days' in Transition action must be greater than or equal to 30 for storageClass 'STANDARD_IA'"),
    ([rule(Expiration=None)], "invalid_request", "At least one action needs to be specified in a rule"),
    ([rule(Filter={"Tag": {"Key": "k", "Value": "v"}}, AbortIncompleteMultipartUpload={"DaysAfterInitiation": "1"})],
     "invalid_request", "AbortIncompleteMultipartUpload cannot be specified with Tags."),
    ([rule(Filter={"ObjectSizeLessThan": "9"}, AbortIncompleteMultipartUpload={"DaysAfterInitiation": "1"})],
     "invalid_request", "AbortIncompleteMultipartUpload cannot be specified with Object Size."),
    ([rule(Filter={"Tag": {"Key": "k", "Value": "v"}}, Expiration={"ExpiredObjectDeleteMarker": "true"})],
     "invalid_request", "ExpiredObjectDeleteMarker cannot be specified with Tags."),
    ([rule(Filter={"And": {"Tags": [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]}})],
     "invalid_request", "Duplicate Tag Keys are not allowed."),
    ([rule(Filter={"And": {"ObjectSizeGreaterThan": "10", "ObjectSizeLessThan": "10"}})], "invalid_request",
     "'ObjectSizeLessThan' has to be a value greater than 'ObjectSizeGreaterThan'."),
    ([rule(Filter={"ObjectSizeLessThan": "0"})], "invalid_request",
     "'ObjectSizeLessThan' should be between 1 and 1099511627776000."),
    ([rule(ID="a"), rule(ID="b", Filter=None, Prefix="x/")], "invalid_request",
     "Base level prefix cannot be used in Lifecycle V2, prefixes are only supported in the Filter."),
    ([rule(ID="a", Filter=None, Prefix="x/"), rule(ID="b")], "invalid_request",
     "Filter element can only be used in Lifecycle V2."),
    ([rule()] * 1001, "invalid_request",
     "The number of lifecycle rules must not exceed the allowed limit of 1000 rules."),
])
def test_a_faulty_configuration_is_refused_with_aws_code_and_message(given, kind, message):
    got_kind, got_message = fault(given)
    assert got_kind == kind
    if message is not None:
        assert got_message == message


def test_an_object_expires_at_the_first_day_boundary_after_its_age_is_reached():
    r = parse_rules([rule(Expiration={"Days": "3"})])[0]
    created = MIDNIGHT_2020 + 10.5 * 3600  # 2020-01-01 10:30 UTC
    assert r.expires_at(created, DAY) == MIDNIGHT_2020 + 4 * DAY  # 2020-01-05 00:00, as AWS's example
    assert day_boundary(MIDNIGHT_2020, DAY) == MIDNIGHT_2020
    assert expiring_rule([r], "k", 1, {}, created, MIDNIGHT_2020 + 4 * DAY - 1, DAY) is None
    assert expiring_rule([r], "k", 1, {}, created, MIDNIGHT_2020 + 4 * DAY, DAY) is r
    assert r.expires_at(100.2, 1.0) == 104.0  # a one-second "day" (MINIS3_LIFECYCLE_DAY_S=1)


def test_matching_takes_every_condition_of_the_filter_and_skips_disabled_rules():
    tagged, sized, off, dated = parse_rules([
        rule(ID="tagged", Filter={"And": {"Prefix": "a/", "Tags": [{"Key": "k", "Value": "v"}]}}),
        rule(ID="sized", Filter={"And": {"ObjectSizeGreaterThan": "10", "ObjectSizeLessThan": "20"}}),
        rule(ID="off", Status="Disabled"),
        rule(ID="dated", Filter={"Prefix": "d/"}, Expiration={"Date": "2020-01-01T00:00:00Z"}),
    ])
    later = MIDNIGHT_2020 + 100 * DAY
    assert tagged.filter.matches("a/x", 5, {"k": "v", "other": "1"})
    assert not tagged.filter.matches("a/x", 5, {"k": "w"}) and not tagged.filter.matches("b/x", 5, {"k": "v"})
    assert [sized.filter.matches("s", n, {}) for n in (10, 11, 19, 20)] == [False, True, True, False]
    assert expiring_rule([off], "any", 1, {}, 0.0, later, DAY) is None
    assert expiring_rule([dated], "d/x", 1, {}, later, later, DAY) is dated  # a Date passed: whatever the age
    assert expiring_rule([dated], "d/x", 1, {}, 0.0, MIDNIGHT_2020 - 1, DAY) is None


def test_an_upload_is_aborted_only_under_a_rule_with_the_action_and_a_matching_prefix():
    abort, expire = parse_rules([
        rule(ID="abort", Filter={"Prefix": "up/"}, Expiration=None, AbortIncompleteMultipartUpload={
            "DaysAfterInitiation": "2"}),
        rule(ID="expire"),
    ])
    assert aborting_rule([abort, expire], "up/x", 0.0, 2 * DAY, DAY) is abort
    assert aborting_rule([abort, expire], "up/x", 0.0, 2 * DAY - 1, DAY) is None
    assert aborting_rule([abort, expire], "down/x", 0.0, 9 * DAY, DAY) is None
    assert isinstance(abort, Rule) and abort.abort_at(0.5, DAY) == 3 * DAY
