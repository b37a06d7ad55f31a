"""Which timers an incident should have, and whether one still applies when it fires."""

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.escalation import (
    EscalationPolicy,
    IncidentClock,
    TimerKind,
    due,
    flapping,
    timers_for,
)

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
POLICY = EscalationPolicy(l1_ack_timeout=timedelta(minutes=15),
                          l0_promote_after=timedelta(minutes=30),
                          ack_reminder_after=timedelta(hours=4),
                          flapping_count=3, flapping_window=timedelta(hours=1))


def clock(tier="L1", state="triggered", acknowledged_at=None, fired=(), silenced=False):
    return IncidentClock(id=1, tier=tier, state=state, silenced=silenced, triggered_at=T0,
                         acknowledged_at=acknowledged_at, fired=frozenset(fired))


@pytest.mark.parametrize(
    ("incident", "expected"),
    [
        (clock(), [(TimerKind.ACK_TIMEOUT, T0 + timedelta(minutes=15))]),
        (clock(fired={"ack_timeout"}), []),
        (clock(tier="L0"), [(TimerKind.PROMOTE, T0 + timedelta(minutes=30))]),
        (clock(tier="L0", fired={"promote"}), []),
        (clock(state="acknowledged", acknowledged_at=T0 + timedelta(minutes=5)),
         [(TimerKind.ACK_REMINDER, T0 + timedelta(hours=4, minutes=5))]),
        (clock(state="resolved"), []),
        (clock(silenced=True), []),
        (clock(tier="record"), []),
    ],
)
def test_timers_for(incident, expected):
    assert [(t.kind, t.due_at) for t in timers_for(incident, POLICY)] == expected


def test_disabled_timers_are_not_scheduled():
    policy = EscalationPolicy(l1_ack_timeout=None, l0_promote_after=None, ack_reminder_after=None)
    assert timers_for(clock(), policy) == [] and timers_for(clock(tier="L0"), policy) == []


def test_a_timer_that_fires_after_the_state_moved_on_does_nothing():
    late = T0 + timedelta(minutes=20)
    assert due(TimerKind.ACK_TIMEOUT, clock(), POLICY, late)
    assert not due(TimerKind.ACK_TIMEOUT, clock(), POLICY, T0 + timedelta(minutes=14))
    assert not due(TimerKind.ACK_TIMEOUT, clock(state="acknowledged", acknowledged_at=late),
                   POLICY, late)
    assert not due(TimerKind.ACK_TIMEOUT, clock(fired={"ack_timeout"}), POLICY, late)


@pytest.mark.parametrize(
    ("minutes_ago", "expected"),
    [([5, 10, 20], True), ([5, 10], False), ([5, 10, 61], False), ([], False)],
)
def test_flapping(minutes_ago, expected):
    refires = [T0 - timedelta(minutes=m) for m in minutes_ago]
    assert flapping(refires, POLICY, T0) is expected
