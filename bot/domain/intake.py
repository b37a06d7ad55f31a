"""What batches of alerts change, decided from the facts the store loaded and `now`.

`route` groups each alert; `openings` says which groups open a new incident (the
store inserts those first, since every row written after refers to an incident's
id); `plan` then walks the alerts in order and returns every change: incidents
opened, joined, repeated, resolved, reopened and promoted, with their timeline
entries, owed deliveries, runbook runs and occurrence writes. State moves only
through `incident.transition`. No I/O: the store loads and persists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.domain.alert import Alert, AlertStatus
from bot.domain.durations import format_duration
from bot.domain.escalation import flapping
from bot.domain.incident import (
    PAGE_SKIPPED,
    Action,
    DeliveryPolicy,
    IncidentFacts,
    IncidentState,
    OwedDelivery,
    deliveries_owed,
    describe,
    group_hash,
    group_key,
    promote,
    transition,
)
from bot.domain.intake_facts import (
    BatchPlan,
    Facts,
    OccurrenceWrite,
    Plan,
    Routed,
    RunRequest,
    TimelineRow,
)
from bot.domain.messages import thread_reply
from bot.domain.routing import RoutingConfig, Tier

FIRING, RESOLVED = AlertStatus.FIRING.value, AlertStatus.RESOLVED.value
# Timeline kinds that count as firing again, for flapping.
REFIRE_KINDS = ("alert_refired", "reopened")
# Choose the diagnostics runbook for a new incident: (route's runbook, labels) -> name.
ChooseRunbook = Callable[[str | None, Mapping[str, str]], str | None]


def route(batches: Sequence[Sequence[Alert]], routing: RoutingConfig) -> list[list[Routed]]:
    """Each alert with its route and its group (the route's `group_by` labels)."""
    def routed(alert: Alert) -> Routed:
        chosen = routing.route(alert.labels)
        key = group_key(alert.labels, chosen.group_by)
        return Routed(alert, chosen, key, group_hash(key))

    return [[routed(alert) for alert in alerts] for alerts in batches]


def first_firing(routed: Sequence[Sequence[Routed]]) -> dict[str, Routed]:
    first: dict[str, Routed] = {}
    for batch in routed:
        for item in batch:
            if item.alert.status is AlertStatus.FIRING:
                first.setdefault(item.ghash, item)
    return first


def reopen_since(routing: RoutingConfig, now: datetime) -> datetime:
    """A resolved incident reopens when its group fires again within the window
    (resolved at this instant or later)."""
    return now - routing.reopen_window


def _reopens(candidate: IncidentFacts | None, since: datetime) -> bool:
    return candidate is not None and candidate.resolved_at is not None \
        and candidate.resolved_at >= since


def closed_groups(routed: Sequence[Sequence[Routed]], open_hashes: Iterable[str]) -> list[str]:
    """Groups that fire without an open incident: they reopen one or open one."""
    is_open = set(open_hashes)
    return [ghash for ghash in first_firing(routed) if ghash not in is_open]


def openings(routed: Sequence[Sequence[Routed]], facts: Facts, *, routing: RoutingConfig,
             policy: DeliveryPolicy, now: datetime, key: Callable[[], str],
             ) -> dict[str, IncidentFacts]:
    """The incidents to insert (id 0 until inserted), by group: those of the groups whose
    first firing alert finds neither an open incident nor one to reopen. `key` makes
    a new incident's PagerDuty dedup key."""
    since = reopen_since(routing, now)
    new = {}
    for ghash, item in first_firing(routed).items():
        if ghash in facts.open:
            continue
        if _reopens(facts.reopenable.get(ghash), since):
            continue
        alert, chosen = item.alert, item.route
        new[ghash] = IncidentFacts(
            id=0, key=key(), group_key=item.key, group_hash=ghash, title=describe(alert),
            state=IncidentState.TRIGGERED, tier=chosen.tier.value, route=chosen.name,
            team=chosen.team, runbook=chosen.runbook,
            channel=chosen.channel or policy.default_channel, model=alert.model,
            version=alert.version, environment=alert.environment,
            severity=alert.severity or None, source=alert.source, labels=dict(alert.labels),
            silence_id=next((s.id for s in facts.silences if s.silences(alert, now)), None),
            triggered_at=now)
    return new


def plan(routed: Sequence[Sequence[Routed]], facts: Facts, fresh: Mapping[str, IncidentFacts],
         *, routing: RoutingConfig, policy: DeliveryPolicy, now: datetime,
         choose_runbook: ChooseRunbook) -> Plan:
    """Every change the batches make, in order; `fresh` are `openings`, inserted (with ids)."""
    return _Planner(facts, fresh, routing, policy, now, choose_runbook).run(routed)


@dataclass(slots=True)
class _Occurrence:
    id: int | None  # None: new
    status: str
    starts_at: datetime | None
    ends_at: datetime | None
    repeats: int = 0
    touched: bool = False
    alert: Alert | None = None


class _Planner:
    def __init__(self, facts: Facts, fresh: Mapping[str, IncidentFacts], routing: RoutingConfig,
                 policy: DeliveryPolicy, now: datetime, choose_runbook: ChooseRunbook) -> None:
        self.facts, self.routing, self.policy, self.now = facts, routing, policy, now
        self.choose_runbook = choose_runbook
        self.batch = BatchPlan()
        self.incidents: dict[int, IncidentFacts] = {}
        self.changed: set[int] = set()
        self.open_by_hash: dict[str, int | None] = {g: i.id for g, i in facts.open.items()}
        self.reopenable = dict(facts.reopenable)
        self.fresh = dict(fresh)
        self.resolved_here: dict[str, int] = {}
        self.reopened: set[int] = set()
        self.heard_from: set[int] = set()
        self.refires: dict[int, list[datetime]] = {}
        self.occurrences: dict[int, dict[str, _Occurrence]] = {}
        for incident in [*facts.open.values(), *facts.reopenable.values(), *fresh.values()]:
            self.incidents[incident.id] = incident
        for incident_id, known in facts.occurrences.items():
            self.occurrences[incident_id] = {
                fp: _Occurrence(o.id, o.status, o.starts_at, o.ends_at) for fp, o in known.items()}

    def run(self, routed: Sequence[Sequence[Routed]]) -> Plan:
        batches = []
        for items in routed:
            self.batch = BatchPlan()
            for item in items:
                incident_id = self.open_by_hash.get(item.ghash)
                if item.alert.status is AlertStatus.FIRING:
                    self.firing(item, incident_id)
                elif incident_id is not None:
                    self.resolved(item.alert, incident_id)
            batches.append(self.batch)
        writes = [OccurrenceWrite(incident_id, o.id, o.alert, o.status, o.starts_at, o.ends_at,
                                  o.repeats)
                  for incident_id, known in self.occurrences.items() for o in known.values()
                  if o.alert is not None or o.touched]
        writes.sort(key=lambda w: w.id is not None)
        return Plan(batches, {i: self.incidents[i] for i in sorted(self.changed)}, writes,
                    frozenset(self.heard_from))

    def update(self, incident_id: int, **changes: Any) -> IncidentFacts:
        self.incidents[incident_id] = dataclasses.replace(self.incidents[incident_id], **changes)
        self.changed.add(incident_id)
        return self.incidents[incident_id]

    def timeline(self, incident_id: int, kind: str, detail: str, actor: str) -> None:
        self.batch.timeline.append(TimelineRow(incident_id, kind, detail, actor))
        if kind in REFIRE_KINDS:
            self.refires.setdefault(incident_id, []).append(self.now)

    def owe(self, incident_id: int, change: str, reply: str | None = None,
            first_in_line: bool = False) -> None:
        self.batch.changed.add(incident_id)
        incident = self.incidents[incident_id]
        owed, skipped = deliveries_owed(incident, change, self.policy, reply=reply)
        if skipped:
            self.timeline(incident_id, "page_skipped", PAGE_SKIPPED, "bot")
        for delivery in owed:
            page = delivery.target == "pagerduty" and delivery.action == "trigger"
            if page and not incident.paged:
                incident = self.update(incident_id, paged=True)
            self.batch.deliveries.append(dataclasses.replace(
                delivery, first_in_line=first_in_line and delivery.target == "pagerduty"))

    def firing(self, item: Routed, incident_id: int | None) -> None:
        alert = item.alert
        if incident_id is None:
            incident_id = self.reopen(item)
            if incident_id is None:
                incident_id = self.open(item)
        known = self.occurrences.setdefault(incident_id, {})
        occurrence = known.get(alert.fingerprint)
        self.heard_from.add(incident_id)
        if occurrence is None:
            known[alert.fingerprint] = _Occurrence(None, alert.status.value, alert.starts_at,
                                                   alert.ends_at, alert=alert)
            incident = self.update(incident_id,
                                   alert_count=self.incidents[incident_id].alert_count + 1)
            if incident.alert_count > 1:
                self.timeline(incident_id, "alert_joined", describe(alert), alert.source)
                self.owe(incident_id, "joined", reply=thread_reply("joined", alert=describe(alert)))
        elif occurrence.status == RESOLVED:
            occurrence.status = FIRING
            occurrence.starts_at = alert.starts_at or occurrence.starts_at
            occurrence.ends_at = None
            occurrence.touched = True
            if incident_id not in self.reopened:
                self.timeline(incident_id, "alert_refired", describe(alert), alert.source)
                self.owe(incident_id, "refired",
                         reply=thread_reply("refired", alert=describe(alert)))
            self.promote_if_flapping(incident_id)
        else:
            occurrence.repeats += 1
            occurrence.touched = True

    def open(self, item: Routed) -> int:
        """Open the incident `openings` decided on for this alert's group."""
        alert, chosen = item.alert, item.route
        incident = self.fresh.pop(item.ghash)
        self.open_by_hash[item.ghash] = incident.id
        self.occurrences[incident.id] = {}
        self.batch.opened.append(incident.id)
        self.timeline(incident.id, "opened",
                      f"{chosen.tier.value} via route {chosen.name!r}: {incident.title}",
                      alert.source)
        if incident.silence_id is not None:
            self.timeline(incident.id, "silenced",
                          f"matched silence #{incident.silence_id}: recorded, not paged", "bot")
        # A new incident's page is first in line for its incident: nothing can be
        # owed before it, so it can go out the moment this commits.
        self.owe(incident.id, "opened", first_in_line=True)
        if incident.silence_id is None and chosen.tier.posts:
            runbook = self.choose_runbook(chosen.runbook, alert.labels)
            if runbook is not None:
                self.batch.runs.append(RunRequest(incident.id, runbook))
        return incident.id

    def reopen(self, item: Routed) -> int | None:
        """Reopen the group's incident resolved within the reopen window, if there is one."""
        if item.ghash in self.resolved_here:
            incident_id: int | None = self.resolved_here.pop(item.ghash)
        else:
            candidate = self.reopenable.pop(item.ghash, None)
            reopens = _reopens(candidate, reopen_since(self.routing, self.now))
            incident_id = candidate.id if candidate is not None and reopens else None
        if incident_id is None:
            return None
        incident = self.incidents[incident_id]
        state = transition(incident.state, Action.REOPEN)
        assert state is not None  # only resolved incidents are reopened
        self.update(incident_id, state=state, resolved_at=None, resolved_by=None,
                    acknowledged_at=None, acknowledged_by=None,
                    reopen_count=incident.reopen_count + 1)
        self.open_by_hash[item.ghash] = incident_id
        self.reopened.add(incident_id)
        alert = item.alert
        self.timeline(incident_id, "reopened",
                      f"fired again within the reopen window: {describe(alert)}", alert.source)
        self.owe(incident_id, "reopened", reply=thread_reply("reopened", alert=describe(alert)))
        self.promote_if_flapping(incident_id)
        return incident_id

    def promote_if_flapping(self, incident_id: int) -> None:
        """An L0 that keeps firing again is not going away: page a human."""
        incident = self.incidents[incident_id]
        if incident.tier != Tier.L0.value or incident.silence_id is not None:
            return
        escalation = self.routing.escalation
        refires = [*self.facts.refires.get(incident_id, ()), *self.refires.get(incident_id, ())]
        if flapping(refires, escalation, self.now):
            reason = (f"fired again {len(refires)} times within "
                      f"{format_duration(escalation.flapping_window)} (flapping)")
            self.update(incident_id, tier=promote(incident.tier).value)
            self.timeline(incident_id, "promoted", f"L0 → L1: {reason}", "bot")
            self.owe(incident_id, "promoted", reply=thread_reply("promoted", reason=reason))

    def resolved(self, alert: Alert, incident_id: int) -> None:
        known = self.occurrences.setdefault(incident_id, {})
        occurrence = known.get(alert.fingerprint)
        if occurrence is None or occurrence.status == RESOLVED:
            return
        occurrence.status = RESOLVED
        occurrence.ends_at = alert.ends_at or self.now
        occurrence.touched = True
        if any(o.status == FIRING for o in known.values()):
            self.timeline(incident_id, "alert_resolved", describe(alert), alert.source)
            return
        incident = self.incidents[incident_id]
        state = transition(incident.state, Action.RESOLVE)
        assert state is not None  # only open incidents are resolved here
        self.update(incident_id, state=state, resolved_at=self.now, resolved_by=alert.source)
        self.timeline(incident_id, "resolved", "all alerts resolved", alert.source)
        self.owe(incident_id, "resolved")
        for side in self.facts.side_pages.get(incident_id, ()):
            self.batch.deliveries.append(OwedDelivery(
                incident_id, "pagerduty", "resolve",
                {k: side[k] for k in ("dedup_key", "routing_key_env")}))
        self.batch.changed.add(incident_id)
        self.open_by_hash[incident.group_hash] = None
        self.resolved_here[incident.group_hash] = incident_id


def refire_candidates(routed: Sequence[Sequence[Routed]], facts: Facts) -> list[int]:
    """The L0 incidents (not silenced) that may fire again in these batches, whose
    recent refires the flapping check needs: those reopening, those with a resolved
    occurrence firing again, and those an alert resolves (it may fire again after)."""
    firing = {(item.ghash, item.alert.fingerprint) for batch in routed for item in batch
              if item.alert.status is AlertStatus.FIRING}
    resolving = {item.ghash for batch in routed for item in batch
                 if item.alert.status is AlertStatus.RESOLVED}
    candidates = list(facts.reopenable.values())
    for ghash, incident in facts.open.items():
        known = facts.occurrences.get(incident.id, {})
        if ghash in resolving or any(o.status == RESOLVED and (ghash, fp) in firing
                                     for fp, o in known.items()):
            candidates.append(incident)
    return sorted({i.id for i in candidates if i.tier == Tier.L0.value and i.silence_id is None})


def flapping_since(routing: RoutingConfig, now: datetime) -> datetime:
    """The refires before this instant do not count towards flapping."""
    return now - routing.escalation.flapping_window
