"""Incident grouping and the incident state machine.

Pure decisions: given the current state and what happened, what the new state is
and what is owed to the outside world. The store applies them in one transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


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


def group_key(labels: Mapping[str, str], group_by: Sequence[str]) -> str:
    """Alerts with equal values of the group_by labels belong to one open incident."""
    return ",".join(f"{name}={labels.get(name, '')}" for name in group_by)


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
