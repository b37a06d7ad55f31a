"""Writes to one incident outside intake: timeline, owed deliveries, resolve, promote, runs.

The decisions are the domain's (`incident.deliveries_owed`); these functions apply
them to the caller's session and transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from bot.domain.incident import (
    PAGE_SKIPPED,
    Action,
    DeliveryPolicy,
    IncidentFacts,
    IncidentState,
    deliveries_owed,
    transition,
)
from bot.domain.incident import promote as promoted
from bot.domain.messages import thread_reply
from bot.models import Delivery, Incident, RunbookRun, TimelineEntry

OPEN_STATES = (IncidentState.TRIGGERED.value, IncidentState.ACKNOWLEDGED.value)


def facts_of(incident: Incident) -> IncidentFacts:
    """The incident row as the domain reads it."""
    return IncidentFacts(
        id=incident.id,  # type: ignore[arg-type]
        key=incident.key, group_key=incident.group_key, group_hash=incident.group_hash,
        title=incident.title, state=IncidentState(incident.state), tier=incident.tier,
        route=incident.route, source=incident.source, triggered_at=incident.triggered_at,
        team=incident.team, runbook=incident.runbook, channel=incident.channel,
        model=incident.model, version=incident.version, environment=incident.environment,
        severity=incident.severity, labels=incident.labels, silence_id=incident.silence_id,
        paged=incident.paged, acknowledged_at=incident.acknowledged_at,
        acknowledged_by=incident.acknowledged_by, resolved_at=incident.resolved_at,
        resolved_by=incident.resolved_by, reopen_count=incident.reopen_count,
        alert_count=incident.alert_count)


def add_timeline(
    incident: Incident, kind: str, detail: str, *, session: Session, actor: str, now: datetime
) -> None:
    session.add(
        TimelineEntry(incident_id=incident.id, at=now, actor=actor, kind=kind, detail=detail)
    )


def owe(
    incident: Incident,
    change: str,
    *,
    session: Session,
    policy: DeliveryPolicy,
    now: datetime,
    reply: str | None = None,
    from_pager: bool = False,
) -> list[Delivery]:
    """Enqueue what `change` owes; returns the deliveries written."""
    owed, skipped = deliveries_owed(facts_of(incident), change, policy, reply=reply,
                                    from_pager=from_pager)
    if skipped:
        add_timeline(incident, "page_skipped", PAGE_SKIPPED, session=session, actor="bot",
                     now=now)
    written = []
    for item in owed:
        if item.target == "pagerduty" and item.action == "trigger":
            incident.paged = True
        written.append(Delivery(incident_id=item.incident_id, target=item.target,
                                action=item.action, payload=dict(item.payload),
                                created_at=now, next_attempt_at=now))
        session.add(written[-1])
    return written


def request_run(incident: Incident | None, runbook: str, purpose: str, *, session: Session,
                now: datetime, requested_by: str, params: dict[str, Any] | None = None,
                flush: bool = True) -> RunbookRun:
    """Ask for a runbook run; a worker leases and runs it after this transaction commits.
    `flush=False` leaves the id unassigned until the caller's next flush."""
    run = RunbookRun(incident_id=incident.id if incident else None, runbook=runbook,
                     purpose=purpose, params=params or {}, requested_by=requested_by,
                     created_at=now)
    session.add(run)
    if flush:
        session.flush()
    return run


def resolve(
    incident: Incident, *, session: Session, policy: DeliveryPolicy, now: datetime, actor: str,
    detail: str, reply: str | None = None, from_pager: bool = False,
) -> None:
    """Resolve an open incident; ValueError if it is resolved already (callers check)."""
    state = transition(IncidentState(incident.state), Action.RESOLVE)
    if state is None:
        raise ValueError(f"incident #{incident.id} is already resolved")
    incident.state = state.value
    incident.open_group_hash = None
    incident.resolved_at = now
    incident.resolved_by = actor
    add_timeline(incident, "resolved", detail, session=session, actor=actor, now=now)
    owe(incident, "resolved", session=session, policy=policy, now=now, reply=reply,
        from_pager=from_pager)
    for page in side_pages(incident, session=session):
        session.add(Delivery(
            incident_id=incident.id, target="pagerduty", action="resolve",  # type: ignore[arg-type]
            payload={k: page[k] for k in ("dedup_key", "routing_key_env")},
            created_at=now, next_attempt_at=now))


def promote(incident: Incident, reason: str, *, session: Session, policy: DeliveryPolicy,
            now: datetime) -> None:
    """L0 → L1: the bot could not make it go away; page a human, and say why."""
    incident.tier = promoted(incident.tier).value
    add_timeline(incident, "promoted", f"L0 → L1: {reason}", session=session, actor="bot",
                 now=now)
    owe(incident, "promoted", session=session, policy=policy, now=now,
        reply=thread_reply("promoted", reason=reason))


def side_page(incident: Incident, suffix: str, routing_key_env: str,
              trigger: dict[str, Any]) -> dict[str, Any]:
    """A page to another PagerDuty service (a model team for L2, the escalation service
    for an unacknowledged L1). Only the name of the variable holding that service's key
    is stored; the adapter reads the key when it sends."""
    return {"dedup_key": f"{incident.key}-{suffix}", "routing_key_env": routing_key_env,
            "payload": trigger}


def side_pages(incident: Incident, *, session: Session) -> list[dict[str, Any]]:
    """Side pages sent for an incident, so that resolving it resolves them too."""
    triggers = session.exec(select(Delivery.payload).where(
        Delivery.incident_id == incident.id, Delivery.target == "pagerduty",
        Delivery.action == "trigger")).all()
    return [p for p in triggers if p.get("routing_key_env")]
