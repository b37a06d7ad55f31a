"""What people do to incidents, from Slack or PagerDuty: acknowledge, resolve, note,
declare, escalate to the model's owners. Each runs inside the caller's transaction,
locks the incident row first (so a Slack click and a PagerDuty webhook arriving
together apply once), writes the timeline and enqueues what the change owes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from bot import store
from bot.domain.durations import format_duration
from bot.domain.escalation import IncidentClock, TimerKind, due
from bot.domain.incident import Action, IncidentState, TransitionError, group_hash, transition
from bot.domain.messages import Mrkdwn, actor_mrkdwn, group_mention, md, mrkdwn, thread_reply
from bot.domain.pages import trigger_payload
from bot.domain.routing import RoutingConfig, Team, Tier
from bot.models import Delivery, Incident, TimelineEntry
from bot.store import DeliveryPolicy


class ActionRefused(Exception):
    """The action cannot be done; the message says why, for the person who asked."""

    @property
    def text(self) -> Mrkdwn:
        """The message for Slack: escaped, unless it was built as Mrkdwn."""
        return mrkdwn(self.args[0] if self.args else "")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it: `id` goes on the timeline (slack:U…, pagerduty:P…), `mention` into Slack
    (Mrkdwn, e.g. from `messages.mention`; plain text is escaped there)."""

    id: str
    mention: str
    via: str  # "slack" | "pagerduty"


@dataclass(frozen=True, slots=True)
class Done:
    incident_id: int
    changed: bool
    message: str


def locked(incident_id: int, *, session: Session) -> Incident:
    incident = session.exec(
        select(Incident).where(Incident.id == incident_id).with_for_update()
    ).first()
    if incident is None:
        raise ActionRefused(f"There is no incident #{incident_id}.")
    return incident


def locked_by_key(key: str, *, session: Session) -> Incident | None:
    return session.exec(select(Incident).where(Incident.key == key).with_for_update()).first()


def acknowledge(incident: Incident, *, session: Session, policy: DeliveryPolicy, now: datetime,
                actor: Actor) -> Done:
    try:
        new_state = transition(IncidentState(incident.state), Action.ACKNOWLEDGE)
    except TransitionError:
        raise ActionRefused(f"Incident #{incident.id} is already resolved.") from None
    if new_state is None:
        return Done(incident.id, False,  # type: ignore[arg-type]
                    md("Incident #{} was already acknowledged by {}.", incident.id,
                       actor_mrkdwn(incident.acknowledged_by or "")))
    incident.state = new_state.value
    incident.acknowledged_at = now
    incident.acknowledged_by = actor.id
    store.add_timeline(incident, "acknowledged", f"acknowledged via {actor.via}",
                       session=session, actor=actor.id, now=now)
    store.owe(incident, "acknowledged", session=session, policy=policy, now=now,
              reply=thread_reply("acknowledged", actor=actor.mention, via=actor.via),
              from_pager=actor.via == "pagerduty")
    return Done(incident.id, True, f"Acknowledged incident #{incident.id}.")  # type: ignore[arg-type]


def resolve(incident: Incident, *, session: Session, policy: DeliveryPolicy, now: datetime,
            actor: Actor, note: str = "") -> Done:
    if transition(IncidentState(incident.state), Action.RESOLVE) is None:
        raise ActionRefused(f"Incident #{incident.id} is already resolved.")
    detail = f"resolved via {actor.via}" + (f": {note}" if note else "")
    store.resolve(incident, session=session, policy=policy, now=now, actor=actor.id,
                  detail=detail, from_pager=actor.via == "pagerduty",
                  reply=thread_reply("resolved_with_note" if note else "resolved",
                                     actor=actor.mention, via=actor.via, note=note))
    return Done(incident.id, True, f"Resolved incident #{incident.id}.")  # type: ignore[arg-type]


def add_note(incident: Incident, text: str, *, session: Session, policy: DeliveryPolicy,
             now: datetime, actor: Actor) -> Done:
    store.add_timeline(incident, "note", text, session=session, actor=actor.id, now=now)
    store.owe(incident, "noted", session=session, policy=policy, now=now,
              reply=thread_reply("note", actor=actor.mention, text=text))
    return Done(incident.id, True, f"Noted on incident #{incident.id}.")  # type: ignore[arg-type]


def declare(title: str, *, model: str | None, tier: Tier, severity: str | None,
            routing: RoutingConfig, session: Session, policy: DeliveryPolicy, now: datetime,
            actor: Actor) -> Done:
    """A manual incident: routed like an alert for its team, paged like any L1."""
    labels = {"alertname": "Declared", "severity": severity or ("critical" if tier.pages
                                                                  else "warning")}
    if model:
        labels["model"] = model
    route = routing.route(labels)
    key = f"declared:{uuid.uuid4().hex}"  # a declared incident never groups with another
    incident = Incident(
        key=uuid.uuid4().hex, group_key=key, group_hash=group_hash(key),
        open_group_hash=group_hash(key), title=title, state=IncidentState.TRIGGERED.value,
        tier=tier.value, route="declared", team=route.team, runbook=route.runbook,
        channel=route.channel or policy.default_channel, model=model, severity=labels["severity"],
        source=actor.via, labels=labels, triggered_at=now, last_alert_at=now,
    )
    session.add(incident)
    session.flush()
    store.add_timeline(incident, "opened", f"{tier.value} declared via {actor.via}: {title}",
                       session=session, actor=actor.id, now=now)
    store.owe(incident, "opened", session=session, policy=policy, now=now)
    return Done(incident.id, True,  # type: ignore[arg-type]
                md("Declared incident #{} ({}): {:.1000}", incident.id, tier.value, title))


def escalate(incident: Incident, *, team: Team | None, team_pageable: bool, session: Session,
             policy: DeliveryPolicy, now: datetime, actor: Actor) -> Done:
    """L2: page the owning team's own PagerDuty service when it has one (and it is
    configured), otherwise mention its Slack user group in the thread."""
    if incident.state == IncidentState.RESOLVED.value:
        raise ActionRefused(f"Incident #{incident.id} is already resolved.")
    if team is None:
        raise ActionRefused(f"Incident #{incident.id} has no owning team in its route "
                            f"({incident.route!r}); add `team:` to the route.")
    if incident.escalated_team:
        return Done(incident.id, False,  # type: ignore[arg-type]
                    f"Incident #{incident.id} was already escalated to {incident.escalated_team}.")
    incident.escalated_team, incident.escalated_at, incident.escalated_by = team.name, now, actor.id
    if team_pageable and policy.pagerduty:
        incident.escalation_paged = True
        trigger = trigger_payload(
            title=f"[L2 {team.name}] {incident.title}", severity=incident.severity,
            model=incident.model, environment=incident.environment,
            alertname=incident.labels.get("alertname", ""), incident_id=incident.id,  # type: ignore[arg-type]
            labels=incident.labels, source=incident.source)
        session.add(Delivery(
            incident_id=incident.id, target="pagerduty", action="trigger",  # type: ignore[arg-type]
            payload=store.side_page(incident, "l2", team.pagerduty_routing_key_env or "", trigger),
            created_at=now, next_attempt_at=now))
        how = md("paged {} through their PagerDuty service", team.name)
    elif team.slack_group:
        how = md("{} asked to help", group_mention(team.slack_group))
    else:
        raise ActionRefused(f"Team {team.name} has neither a PagerDuty service nor a Slack "
                            "group configured.")
    store.add_timeline(incident, "escalated", f"L2 escalation to {team.name}: {how}",
                       session=session, actor=actor.id, now=now)
    store.owe(incident, "escalated", session=session, policy=policy, now=now,
              reply=thread_reply("escalated", team=team.name, actor=actor.mention, how=how))
    return Done(incident.id, True, f"Escalated incident #{incident.id} to {team.name}.")  # type: ignore[arg-type]


def open_incidents(*, session: Session, filters: dict[str, str], limit: int = 20) -> list[Incident]:
    query = select(Incident)
    state = filters.get("state")
    if state:
        query = query.where(Incident.state == state)
    else:
        query = query.where(col(Incident.state).in_(store.OPEN_STATES))
    if "model" in filters:
        query = query.where(Incident.model == filters["model"])
    if "tier" in filters:
        query = query.where(Incident.tier == filters["tier"])
    return list(session.exec(query.order_by(col(Incident.id).desc()).limit(limit)).all())


BOT = Actor(id="bot", mention=Mrkdwn("the bot"), via="timer")


def clock_of(incident: Incident, *, session: Session) -> IncidentClock:
    return clocks_of([incident], session=session)[0]


def clocks_of(incidents: Sequence[Incident], *, session: Session) -> list[IncidentClock]:
    """The timer-relevant facts of each incident; one query for all their fired timers."""
    fired: dict[int, set[str]] = {incident.id: set() for incident in incidents}  # type: ignore[misc]
    ids, kinds = list(fired), [k.value for k in TimerKind]
    for start in range(0, len(ids), 500):
        for incident_id, kind in session.exec(
            select(TimelineEntry.incident_id, TimelineEntry.kind).where(
                col(TimelineEntry.incident_id).in_(ids[start:start + 500]),
                col(TimelineEntry.kind).in_(kinds))):
            fired[incident_id].add(kind)
    return [IncidentClock(id=incident.id, tier=incident.tier, state=incident.state,  # type: ignore[arg-type]
                          silenced=incident.silence_id is not None,
                          triggered_at=incident.triggered_at,
                          acknowledged_at=incident.acknowledged_at,
                          fired=frozenset(fired[incident.id]))  # type: ignore[index]
            for incident in incidents]


def fire_timer(kind: TimerKind, incident_id: int, *, routing: RoutingConfig, session: Session,
               policy: DeliveryPolicy, now: datetime) -> str:
    """Act on a due timer, once: the timeline marks it done, and a timer that no longer
    applies (acknowledged, resolved, already fired) does nothing."""
    incident = session.exec(
        select(Incident).where(Incident.id == incident_id).with_for_update()).first()
    if incident is None:
        return "no such incident"
    escalation = routing.escalation
    if not due(kind, clock_of(incident, session=session), escalation, now):
        return "no longer applies"
    if kind is TimerKind.ACK_TIMEOUT:
        waited = format_duration(now - incident.triggered_at)
        how = "reminded in Slack; no escalation service is configured"
        env = escalation.l1_escalation_service_env
        if env and policy.pagerduty:
            trigger = trigger_payload(
                title=f"[Not acknowledged after {waited}] {incident.title}",
                severity=incident.severity, model=incident.model,
                environment=incident.environment, alertname=incident.labels.get("alertname", ""),
                incident_id=incident.id, labels=incident.labels, source=incident.source)  # type: ignore[arg-type]
            session.add(Delivery(incident_id=incident.id, target="pagerduty",  # type: ignore[arg-type]
                                 action="trigger", created_at=now, next_attempt_at=now,
                                 payload=store.side_page(incident, "esc", env, trigger)))
            how = "escalated to the escalation service in PagerDuty"
        store.add_timeline(incident, kind.value, f"not acknowledged after {waited}: {how}",
                           session=session, actor=BOT.id, now=now)
        store.owe(incident, "noted", session=session, policy=policy, now=now,
                  reply=thread_reply("not_acknowledged", waited=waited, how=how))
    elif kind is TimerKind.PROMOTE:
        store.add_timeline(incident, kind.value, "still open", session=session, actor=BOT.id,
                           now=now)
        store.promote(incident, f"still open after {format_duration(now - incident.triggered_at)}",
                session=session, policy=policy, now=now)
    else:
        who = actor_mrkdwn(incident.acknowledged_by or "")
        since = format_duration(now - (incident.acknowledged_at or now))
        store.add_timeline(incident, kind.value, f"still open {since} after acknowledgement",
                           session=session, actor=BOT.id, now=now)
        store.owe(incident, "noted", session=session, policy=policy, now=now,
                  reply=thread_reply("still_open", who=who, id=incident.id, since=since))
    return f"{kind.value} acted on"
