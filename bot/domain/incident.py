"""Incident grouping and the incident state machine.

Pure decisions: given the current state and what happened, what the new state is
and what is owed to the outside world. The store applies them in one transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from bot.domain.alert import Alert
from bot.domain.messages import MESSAGE_TEXT, cut, shorten
from bot.domain.pages import trigger_payload
from bot.domain.routing import Tier


class IncidentState(StrEnum):
    TRIGGERED = "triggered"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Action(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    REOPEN = "reopen"


class TransitionError(ValueError):
    """The action does not apply to the incident's state (e.g. acknowledging a resolved one)."""


_TRANSITIONS: dict[tuple[IncidentState, Action], IncidentState | None] = {
    (IncidentState.TRIGGERED, Action.ACKNOWLEDGE): IncidentState.ACKNOWLEDGED,
    (IncidentState.ACKNOWLEDGED, Action.ACKNOWLEDGE): None,
    (IncidentState.TRIGGERED, Action.RESOLVE): IncidentState.RESOLVED,
    (IncidentState.ACKNOWLEDGED, Action.RESOLVE): IncidentState.RESOLVED,
    (IncidentState.RESOLVED, Action.RESOLVE): None,
    (IncidentState.RESOLVED, Action.REOPEN): IncidentState.TRIGGERED,
}


def transition(state: IncidentState, action: Action) -> IncidentState | None:
    """The next state, or None when the action is already in effect (a harmless repeat).

    Raises TransitionError when the action makes no sense in this state.
    """
    key = (state, action)
    if key not in _TRANSITIONS:
        raise TransitionError(f"cannot {action.value} an incident that is {state.value}")
    return _TRANSITIONS[key]


def promote(tier: str) -> Tier:
    """L0 → L1: the bot could not make the incident go away, so a human is paged.
    Raises TransitionError for any other tier (only the bot's own tier is promoted)."""
    if tier != Tier.L0.value:
        raise TransitionError(f"cannot promote an incident of tier {tier}")
    return Tier.L1


def group_key(labels: Mapping[str, str], group_by: Sequence[str]) -> str:
    """Alerts with equal values of the group_by labels belong to one open incident."""
    return ",".join(f"{name}={labels.get(name, '')}" for name in group_by)


def describe(alert: Alert) -> str:
    """An incident's title from its alert; a label value is cut to 100 characters, so an
    overlong one cannot push the summary out of what Slack shows."""
    who = " ".join(
        f"{name}={shorten(value, 100)}"
        for name, value in (("model", alert.model), ("version", alert.version),
                            ("env", alert.environment))
        if value
    )
    return f"{shorten(alert.alertname or 'alert', 100)} {who}".strip() + f": {alert.summary}"


def group_hash(key: str) -> str:
    """Fixed-width index value for a group key, which may be arbitrarily long."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Owed:
    """A delivery the outside world is owed because of a change."""

    target: str  # "pagerduty" | "slack"
    action: str  # pagerduty: trigger|acknowledge|resolve; slack: sync|reply


PAGE_ACTIONS = {
    "opened": "trigger",
    "reopened": "trigger",
    "promoted": "trigger",
    "acknowledged": "acknowledge",
    "resolved": "resolve",
}


def owed_for_change(
    change: str, *, pages: bool, posts: bool, paged_before: bool, reply: bool = False,
    from_pager: bool = False,
) -> list[Owed]:
    """What a change to an incident owes PagerDuty and Slack.

    `change` is "opened", "reopened", "promoted" (L0 to L1), "acknowledged",
    "resolved", "joined" (a new alert joined), "refired" (a known alert fired
    again while open) or "noted".
    An acknowledge or resolve is only sent to PagerDuty for incidents that were
    paged, and never back to PagerDuty when the change came from it. A thread
    reply is owed for joins, re-fires and reopens, and whenever `reply` is asked.
    """
    owed: list[Owed] = []
    page_action = PAGE_ACTIONS.get(change)
    if from_pager:
        pass
    elif pages and page_action == "trigger":
        owed.append(Owed("pagerduty", "trigger"))
    elif paged_before and page_action in ("acknowledge", "resolve"):
        owed.append(Owed("pagerduty", page_action))
    if posts:
        if change != "noted":
            owed.append(Owed("slack", "sync"))
        if reply or change in ("joined", "refired", "reopened", "promoted"):
            owed.append(Owed("slack", "reply"))
    return owed


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Which outside systems are configured; nothing is owed to one that is not."""

    slack: bool
    pagerduty: bool
    default_channel: str
    pagerduty_notes: bool = False  # REST API configured: diagnostics go on the page as a note
    # The routing file's key variables that were set at start: the PagerDuty services
    # (besides the platform's) that can be paged. A team whose variable is not here is
    # reached through its Slack group.
    routing_keys_set: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class IncidentFacts:
    """What the decisions read of an incident (the store's row, as plain values)."""

    id: int
    key: str
    group_key: str
    group_hash: str
    title: str
    state: IncidentState
    tier: str
    route: str
    source: str
    triggered_at: datetime
    team: str | None = None
    runbook: str | None = None
    channel: str | None = None
    model: str | None = None
    version: str | None = None
    environment: str | None = None
    severity: str | None = None
    labels: Mapping[str, Any] = field(default_factory=dict)
    silence_id: int | None = None
    paged: bool = False
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    reopen_count: int = 0
    alert_count: int = 0


PAGE_SKIPPED = "not paged: PagerDuty is not configured"
# The fields a decision may change, and so the ones the store writes back.
CHANGEABLE = ("state", "tier", "paged", "acknowledged_at", "acknowledged_by", "resolved_at",
              "resolved_by", "reopen_count", "alert_count")


@dataclass(frozen=True, slots=True)
class OwedDelivery:
    """A delivery to write to the outbox: `first_in_line` when nothing can be owed
    before it for its incident (a new incident's page), so it may go out at commit."""

    incident_id: int
    target: str
    action: str
    payload: Mapping[str, Any]
    first_in_line: bool = False


def deliveries_owed(incident: IncidentFacts, change: str, policy: DeliveryPolicy, *,
                    reply: str | None = None, from_pager: bool = False,
                    ) -> tuple[list[OwedDelivery], bool]:
    """The deliveries `change` owes given what is configured, and whether a page was
    owed that PagerDuty, not being configured, cannot take (the timeline says so)."""
    tier = Tier(incident.tier)
    owed = owed_for_change(
        change,
        pages=tier.pages and incident.silence_id is None,
        posts=tier.posts and incident.silence_id is None,
        paged_before=incident.paged,
        reply=reply is not None,
        from_pager=from_pager,
    )
    written, skipped = [], False
    for item in owed:
        if item.target == "pagerduty" and not policy.pagerduty:
            skipped = skipped or item.action == "trigger"
            continue
        if item.target == "slack" and not policy.slack:
            continue
        written.append(OwedDelivery(incident.id, item.target, item.action,
                                    _payload(incident, item, reply)))
    return written, skipped


def _payload(incident: IncidentFacts, item: Owed, reply: str | None) -> dict[str, Any]:
    if item.target == "pagerduty":
        body: dict[str, Any] = {"dedup_key": incident.key}
        if item.action == "trigger":
            body["payload"] = trigger_payload(
                title=incident.title,
                severity=incident.severity,
                model=incident.model,
                environment=incident.environment,
                alertname=incident.labels.get("alertname", ""),
                incident_id=incident.id,
                labels=incident.labels,
                source=incident.source,
            )
        return body
    if item.action == "reply":  # escaped here unless built with md, and cut to Slack's limit
        return {"text": cut(reply or "", MESSAGE_TEXT)}
    return {}
