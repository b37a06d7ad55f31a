"""What a batch of alerts changes (domain.intake), table-driven over plain facts."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain import intake, intake_facts
from bot.domain.alert import Alert, AlertStatus
from bot.domain.incident import DeliveryPolicy, IncidentFacts, IncidentState, group_hash, group_key
from bot.domain.matchers import Matcher
from bot.domain.routing import parse_routing

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TICK = timedelta(microseconds=1)
ROUTING = parse_routing({
    "version": 1,
    "defaults": {"group_by": ["alertname", "model", "environment"], "reopen_window": "1h"},
    "escalation": {"flapping": {"count": 3, "window": "1h"}},
    "routes": [
        {"name": "jobs", "matchers": ['alertname="JobFailed"'], "tier": "L0",
         "group_by": ["alertname", "job"]},
        {"name": "warnings", "matchers": ['severity="warning"'], "tier": "L0",
         "runbook": "diagnose"},
        {"name": "default", "tier": "L1"},
    ],
})
POLICY = DeliveryPolicy(slack=True, pagerduty=True, default_channel="#ml-oncall")
LABELS = {"alertname": "ErrorRateHigh", "model": "churn", "environment": "production",
          "severity": "critical"}
WARNING = {**LABELS, "severity": "warning"}


def alert(fingerprint="f1", status=AlertStatus.FIRING, **labels):
    return Alert(fingerprint=fingerprint, status=status, labels=labels or LABELS,
                 source="alertmanager")


def ghash(labels=LABELS, group_by=("alertname", "model", "environment")):
    return group_hash(group_key(labels, group_by))


def incident(id_=1, *, labels=LABELS, state=IncidentState.TRIGGERED, tier="L1", **fields):
    key = group_key(labels, ("alertname", "model", "environment"))
    return IncidentFacts(id=id_, key=f"k{id_}", group_key=key, group_hash=group_hash(key),
                         title="t", state=state, tier=tier, route="default",
                         source="alertmanager", triggered_at=NOW - timedelta(hours=3),
                         labels=labels, **fields)


def occurrence(id_=10, status="firing"):
    return intake_facts.OccurrenceFacts(id_, status, None, None)


NOTHING = intake_facts.Facts()


def plan(batches, facts=NOTHING, now=NOW, choose=lambda name, labels: name):
    routed = intake.route(batches, ROUTING)
    new = intake.openings(routed, facts, routing=ROUTING, policy=POLICY, now=now,
                          key=lambda: "new-key")
    fresh = {g: replace(f, id=100 + n) for n, (g, f) in enumerate(new.items())}
    return intake.plan(routed, facts, fresh, routing=ROUTING, policy=POLICY, now=now,
                       choose_runbook=choose)


def kinds(result):
    return [t.kind for batch in result.batches for t in batch.timeline]


def owed(result):
    return [(d.target, d.action) for batch in result.batches for d in batch.deliveries]


def resolved_incident(resolved_at, **fields):
    return incident(state=IncidentState.RESOLVED, resolved_at=resolved_at, resolved_by="am",
                    paged=True, **fields)


@pytest.mark.parametrize(("resolved_at", "reopens"), [
    (NOW - timedelta(hours=1), True),  # just inside the window: its very start
    (NOW - timedelta(hours=1) - TICK, False),  # just outside
    (NOW - timedelta(minutes=5), True),
])
def test_reopen_window_edges(resolved_at, reopens):
    facts = intake_facts.Facts(reopenable={ghash(): resolved_incident(resolved_at)},
                         occurrences={1: {"f1": occurrence(status="resolved")}})
    result = plan([[alert()]], facts)
    if reopens:
        assert kinds(result) == ["reopened"]
        reopened = result.incidents[1]
        assert (reopened.state, reopened.reopen_count, reopened.resolved_at) == (
            IncidentState.TRIGGERED, 1, None)
        assert ("pagerduty", "trigger") in owed(result)
        assert [(o.id, o.status) for o in result.occurrences] == [(10, "firing")]
        assert result.batches[0].opened == []
    else:
        assert kinds(result) == ["opened"]
        assert result.batches[0].opened == [100]
        assert 1 not in result.incidents


@pytest.mark.parametrize(("earlier", "promoted"), [
    ([], False),
    ([NOW - timedelta(minutes=10)], False),  # two with this one: below the count
    ([NOW - timedelta(minutes=30), NOW - timedelta(minutes=10)], True),  # three: exactly it
    ([NOW - timedelta(hours=1), NOW - timedelta(minutes=10)], False),  # one at the window's edge
    ([NOW - timedelta(hours=1) + TICK, NOW - timedelta(minutes=10)], True),  # just inside
])
def test_flapping_promotes_an_l0_at_the_count_within_the_window(earlier, promoted):
    open_ = incident(labels=WARNING, tier="L0")
    facts = intake_facts.Facts(open={ghash(WARNING): open_},
                         occurrences={1: {"f1": occurrence(status="resolved")}},
                         refires={1: earlier})
    result = plan([[alert(**WARNING)]], facts)
    assert kinds(result) == ["alert_refired"] + (["promoted"] if promoted else [])
    assert result.incidents.get(1, open_).tier == ("L1" if promoted else "L0")
    assert (("pagerduty", "trigger") in owed(result)) is promoted


def test_refires_within_one_plan_count_towards_flapping():
    open_ = incident(labels=WARNING, tier="L0")
    facts = intake_facts.Facts(open={ghash(WARNING): open_},
                         occurrences={1: {"f1": occurrence(status="resolved")}})
    resolved = alert(status=AlertStatus.RESOLVED, **WARNING)
    firing = alert(**WARNING)
    result = plan([[firing], [resolved, firing], [resolved, firing]], facts)
    assert kinds(result) == ["alert_refired", "resolved", "reopened", "resolved", "reopened",
                             "promoted"]
    assert result.incidents[1].tier == "L1"


def test_a_silenced_l0_is_not_promoted_for_flapping():
    open_ = incident(labels=WARNING, tier="L0", silence_id=7)
    facts = intake_facts.Facts(open={ghash(WARNING): open_},
                         occurrences={1: {"f1": occurrence(status="resolved")}},
                         refires={1: [NOW - timedelta(minutes=1)] * 5})
    result = plan([[alert(**WARNING)]], facts)
    assert kinds(result) == ["alert_refired"]
    assert owed(result) == []


def silence(starts_at, ends_at):
    return intake_facts.SilenceFacts(7, (Matcher.parse('model="churn"'),), starts_at, ends_at)


@pytest.mark.parametrize(("starts_at", "ends_at", "silenced"), [
    (NOW, NOW + timedelta(hours=1), True),  # at the silence's start
    (NOW + TICK, NOW + timedelta(hours=1), False),  # just before it starts
    (NOW - timedelta(hours=1), NOW, False),  # at its end: over
    (NOW - timedelta(hours=1), NOW + TICK, True),  # just before its end
])
def test_silence_start_and_end(starts_at, ends_at, silenced):
    facts = intake_facts.Facts(silences=(silence(starts_at, ends_at),))
    result = plan([[alert()]], facts)
    if silenced:
        assert kinds(result) == ["opened", "silenced"]
        assert owed(result) == []  # recorded, not paged or posted
    else:
        assert kinds(result) == ["opened"]
        assert owed(result) == [("pagerduty", "trigger"), ("slack", "sync")]
        assert result.batches[0].deliveries[0].first_in_line


@pytest.mark.parametrize(("labels", "incidents"), [
    # the "jobs" route groups by alertname and job only: other models join
    ([{"alertname": "JobFailed", "job": "etl", "model": m} for m in ("a", "b")], 1),
    ([{"alertname": "JobFailed", "job": j, "model": "a"} for j in ("etl", "train")], 2),
    # the default groups by alertname, model and environment
    ([{**LABELS, "model": m} for m in ("a", "b")], 2),
    ([{**LABELS, "instance": i} for i in ("x", "y")], 1),
])
def test_group_by_overrides(labels, incidents):
    alerts = [alert(f"f{n}", **each) for n, each in enumerate(labels)]
    result = plan([alerts])
    assert len(result.batches[0].opened) == incidents
    joined = len(labels) - incidents
    assert kinds(result).count("alert_joined") == joined


def test_resolve_of_an_unknown_group_or_alert_changes_nothing():
    facts = intake_facts.Facts(open={ghash(): incident()}, occurrences={1: {"f1": occurrence()}})
    unknown_group = alert(status=AlertStatus.RESOLVED, **{**LABELS, "model": "other"})
    unknown_alert = alert("f9", status=AlertStatus.RESOLVED)
    result = plan([[unknown_group, unknown_alert]], facts)
    assert (kinds(result), owed(result), result.incidents) == ([], [], {})
    assert result.occurrences == []


def test_repeats_only_count():
    facts = intake_facts.Facts(open={ghash(): incident(alert_count=1)},
                         occurrences={1: {"f1": occurrence()}})
    result = plan([[alert()], [alert()]], facts)
    assert (kinds(result), owed(result), result.incidents) == ([], [], {})
    assert result.occurrences == [intake_facts.OccurrenceWrite(1, 10, None, "firing", None, None, 2)]
    assert result.heard_from == {1}


def test_the_last_alert_resolving_resolves_through_the_state_machine():
    side = {"dedup_key": "k1-l2", "routing_key_env": "TEAM_KEY", "payload": {}}
    facts = intake_facts.Facts(open={ghash(): incident(paged=True, state=IncidentState.ACKNOWLEDGED)},
                         occurrences={1: {"f1": occurrence(), "f2": occurrence(11)}},
                         side_pages={1: [side]})
    result = plan([[alert(status=AlertStatus.RESOLVED)],
                   [alert("f2", status=AlertStatus.RESOLVED)]], facts)
    assert kinds(result) == ["alert_resolved", "resolved"]
    assert result.incidents[1].state is IncidentState.RESOLVED
    assert owed(result) == [("pagerduty", "resolve"), ("slack", "sync"), ("pagerduty", "resolve")]
    assert result.batches[1].deliveries[-1].payload == {"dedup_key": "k1-l2",
                                                        "routing_key_env": "TEAM_KEY"}


def test_a_new_alert_joins_and_a_new_incident_asks_for_its_runbook():
    facts = intake_facts.Facts(open={ghash(): incident(alert_count=1)},
                         occurrences={1: {"f1": occurrence()}})
    result = plan([[alert("f2"), alert("w1", **{**WARNING, "model": "fraud"})]], facts)
    assert kinds(result) == ["alert_joined", "opened"]
    assert result.incidents[1].alert_count == 2
    assert [r.runbook for r in result.batches[0].runs] == ["diagnose"]
    assert {o.alert.fingerprint for o in result.occurrences if o.alert} == {"f2", "w1"}


def test_pagerduty_not_configured_is_said_on_the_timeline():
    routed = intake.route([[alert()]], ROUTING)
    policy = DeliveryPolicy(slack=False, pagerduty=False, default_channel="#x")
    new = intake.openings(routed, intake_facts.Facts(), routing=ROUTING, policy=policy, now=NOW,
                          key=lambda: "k")
    fresh = {g: replace(f, id=5) for g, f in new.items()}
    result = intake.plan(routed, intake_facts.Facts(), fresh, routing=ROUTING, policy=policy, now=NOW,
                         choose_runbook=lambda name, labels: None)
    assert kinds(result) == ["opened", "page_skipped"]
    assert owed(result) == []
    assert not result.incidents[5].paged
