"""When an incident needs a nudge, decided from its facts and `now` (no clocks, no I/O).

Timers are derived, not remembered: `timers_for` says which timers an incident
should have given its state, so after a restart the scheduler is reconciled
from the incidents themselves; `due` says, when a timer fires, whether it still
applies (an acknowledged incident needs no ack-timeout escalation), which makes a
timer that fires twice harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class TimerKind(StrEnum):
    ACK_TIMEOUT = "ack_timeout"  # L1 not acknowledged: remind and escalate in PagerDuty
    PROMOTE = "promote"  # L0 still open: promote to L1 and page
    ACK_REMINDER = "ack_reminder"  # acknowledged but still open: remind the acknowledger


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    l1_ack_timeout: timedelta | None = timedelta(minutes=15)
    l1_escalation_service_env: str | None = None  # env var with the escalation service's key
    l0_promote_after: timedelta | None = timedelta(minutes=30)
    flapping_count: int = 3  # fired again this many times within the window: promote
    flapping_window: timedelta = timedelta(hours=1)
    ack_reminder_after: timedelta | None = timedelta(hours=4)


@dataclass(frozen=True, slots=True)
class IncidentClock:
    """The facts timers depend on."""

    id: int
    tier: str
    state: str
    silenced: bool
    triggered_at: datetime
    acknowledged_at: datetime | None
    fired: frozenset[str]  # timer kinds already acted on (from the timeline)


@dataclass(frozen=True, slots=True)
class Timer:
    kind: TimerKind
    incident_id: int
    due_at: datetime

    @property
    def job_id(self) -> str:
        return f"{self.kind.value}:{self.incident_id}"


def timers_for(incident: IncidentClock, policy: EscalationPolicy) -> list[Timer]:
    """The timers an incident should have now; none once resolved or silenced."""
    if incident.state == "resolved" or incident.silenced:
        return []
    timers = []
    if (incident.tier == "L1" and incident.state == "triggered" and policy.l1_ack_timeout
            and TimerKind.ACK_TIMEOUT not in incident.fired):
        timers.append(Timer(TimerKind.ACK_TIMEOUT, incident.id,
                            incident.triggered_at + policy.l1_ack_timeout))
    if (incident.tier == "L0" and policy.l0_promote_after
            and TimerKind.PROMOTE not in incident.fired):
        timers.append(Timer(TimerKind.PROMOTE, incident.id,
                            incident.triggered_at + policy.l0_promote_after))
    if (incident.state == "acknowledged" and incident.acknowledged_at
            and policy.ack_reminder_after and TimerKind.ACK_REMINDER not in incident.fired):
        timers.append(Timer(TimerKind.ACK_REMINDER, incident.id,
                            incident.acknowledged_at + policy.ack_reminder_after))
    return timers


def due(kind: TimerKind, incident: IncidentClock, policy: EscalationPolicy,
        now: datetime) -> bool:
    """Whether a firing timer still applies to the incident as it is now."""
    return any(t.kind is kind and t.due_at <= now for t in timers_for(incident, policy))


def flapping(refires: Sequence[datetime], policy: EscalationPolicy, now: datetime) -> bool:
    """An L0 that keeps firing again is not going away by itself: promote it."""
    recent = [t for t in refires if t > now - policy.flapping_window]
    return len(recent) >= policy.flapping_count
