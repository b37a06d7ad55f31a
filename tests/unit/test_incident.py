"""Incident state machine, grouping and what each change owes, table-driven."""

import json
import random

import pytest

from bot.domain.durations import format_duration, parse_duration
from bot.domain.incident import (
    Action,
    IncidentState,
    Owed,
    TransitionError,
    group_hash,
    group_key,
    owed_for_change,
    promote,
    transition,
)
from bot.domain.pages import SUMMARY_LIMIT, pagerduty_severity, trigger_payload
from bot.domain.ratelimit import TokenBucket, backoff
from bot.domain.routing import Tier

T, A, R = IncidentState.TRIGGERED, IncidentState.ACKNOWLEDGED, IncidentState.RESOLVED


@pytest.mark.parametrize(
    ("state", "action", "expected"),
    [
        (T, Action.ACKNOWLEDGE, A),
        (A, Action.ACKNOWLEDGE, None),
        (T, Action.RESOLVE, R),
        (A, Action.RESOLVE, R),
        (R, Action.RESOLVE, None),
        (R, Action.REOPEN, T),
    ],
)
def test_transitions(state, action, expected):
    assert transition(state, action) == expected


@pytest.mark.parametrize(("state", "action"), [(R, Action.ACKNOWLEDGE), (T, Action.REOPEN),
                                               (A, Action.REOPEN)])
def test_impossible_transitions_say_why(state, action):
    with pytest.raises(TransitionError, match=state.value):
        transition(state, action)


def test_only_an_l0_is_promoted_and_to_l1():
    assert promote("L0") is Tier.L1
    for tier in ("L1", "record"):
        with pytest.raises(TransitionError, match=tier):
            promote(tier)


def test_group_key_uses_only_the_group_by_labels_in_order():
    labels = {"alertname": "Drift", "model": "churn", "environment": "prod", "pod": "a"}
    key = group_key(labels, ("alertname", "model", "environment"))
    assert key == "alertname=Drift,model=churn,environment=prod"
    assert key == group_key({**labels, "pod": "b"}, ("alertname", "model", "environment"))
    assert group_key({}, ("model",)) == "model="
    assert len(group_hash(key)) == 32 and group_hash(key) != group_hash(key + "x")


PD = "pagerduty"


@pytest.mark.parametrize(
    ("change", "pages", "posts", "paged_before", "expected"),
    [
        ("opened", True, True, False, [Owed(PD, "trigger"), Owed("slack", "sync")]),
        ("opened", False, True, False, [Owed("slack", "sync")]),
        ("opened", False, False, False, []),  # record-only tier, or silenced
        ("resolved", True, True, True, [Owed(PD, "resolve"), Owed("slack", "sync")]),
        ("resolved", False, True, False, [Owed("slack", "sync")]),  # L0: nothing to resolve
        ("acknowledged", True, True, True, [Owed(PD, "acknowledge"), Owed("slack", "sync")]),
        ("joined", True, True, True, [Owed("slack", "sync"), Owed("slack", "reply")]),
        ("reopened", True, True, True,
         [Owed(PD, "trigger"), Owed("slack", "sync"), Owed("slack", "reply")]),
    ],
)
def test_what_a_change_owes(change, pages, posts, paged_before, expected):
    assert owed_for_change(change, pages=pages, posts=posts, paged_before=paged_before) == expected


def test_trigger_payload_fits_pagerduty_limits():
    payload = trigger_payload(title="x" * 5000, severity="page", model="churn",
                              environment="prod", alertname="ErrorRate", incident_id=4,
                              labels={"model": "churn"}, source="alertmanager")
    assert len(payload["summary"]) == SUMMARY_LIMIT
    assert (payload["severity"], payload["source"], payload["component"], payload["group"],
            payload["class"]) == ("critical", "churn", "churn", "prod", "ErrorRate")
    assert [pagerduty_severity(s) for s in ("critical", "warning", "info", "bogus", None)] == [
        "critical", "warning", "info", "error", "error"]



def test_trigger_payload_from_huge_labels_stays_within_pagerduty_limits():
    huge = "😀" * 100_000
    payload = trigger_payload(title=huge, severity="critical", model=huge, environment=huge,
                              alertname=huge, incident_id=4, labels={"model": huge, "job": huge},
                              source="alertmanager")
    assert len(payload["summary"]) == SUMMARY_LIMIT
    assert all(len(payload[field]) <= 255 for field in ("source", "component", "group", "class"))
    assert len(json.dumps(payload).encode()) < 512 * 1024
    many = trigger_payload(title="t", severity=None, model=None, environment=None, alertname="",
                           incident_id=4, labels={f"l{i}": "v" * 1000 for i in range(1000)},
                           source="generic")
    assert len(json.dumps(many).encode()) < 512 * 1024
    assert "the incident record keeps them all" in many["custom_details"]["labels"]["note"]


def test_token_bucket_allows_the_rate_and_says_how_long_to_wait():
    bucket = TokenBucket(120, now=0.0)
    assert all(bucket.take(0.0) == 0 for _ in range(120))
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0
    assert bucket.take(0.5) > 0


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    rng = random.Random(7)
    delays = [backoff(n, base=1, cap=60, rng=rng) for n in range(1, 10)]
    for n, delay in enumerate(delays, start=1):
        ceiling = min(60, 2 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("2h", 7200),
                                               ("1h30m", 5400), ("7d", 604800)])
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize("text", ["", "soon", "10", "1h 5", "-5m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
