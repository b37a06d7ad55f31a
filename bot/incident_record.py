"""Read-only queries over the incident record for operators (`oncall-bot incidents`):
plain dicts in, plain dicts out, so text and JSON renderings share them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, func
from sqlmodel import Session, col, select

from bot.models import Delivery, Incident, RunbookRun, StepResult, TimelineEntry
from bot.store.changes import changes_between

LIST_LIMIT = 500


def list_incidents(*, session: Session, states: Sequence[str] = (), model: str | None = None,
                   since: datetime | None = None, limit: int = LIST_LIMIT) -> list[dict[str, Any]]:
    """Newest first; `since` bounds when they were triggered."""
    query = select(Incident)
    if states:
        query = query.where(col(Incident.state).in_(list(states)))
    if model is not None:
        query = query.where(Incident.model == model)
    if since is not None:
        query = query.where(Incident.triggered_at >= since)
    rows = session.exec(query.order_by(col(Incident.triggered_at).desc(), col(Incident.id).desc())
                        .limit(limit)).all()
    return [_summary(incident) for incident in rows]


def incident_detail(incident_id: int, *, session: Session) -> dict[str, Any] | None:
    """The incident, its timeline, its deliveries (not their payloads: they hold what was
    sent, not what an operator reads) and its runbook runs with each step's outcome."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        return None
    timeline = session.exec(select(TimelineEntry).where(TimelineEntry.incident_id == incident_id)
                            .order_by(col(TimelineEntry.at), col(TimelineEntry.id))).all()
    deliveries = session.exec(select(Delivery).where(Delivery.incident_id == incident_id)
                              .order_by(col(Delivery.id))).all()
    runs = session.exec(select(RunbookRun).where(RunbookRun.incident_id == incident_id)
                        .order_by(col(RunbookRun.id))).all()
    steps: dict[int, list[StepResult]] = {}
    if runs:
        for step in session.exec(select(StepResult).where(col(StepResult.run_id).in_([r.id for r in runs]))
                                 .order_by(col(StepResult.run_id), col(StepResult.position))).all():
            steps.setdefault(step.run_id, []).append(step)
    return {
        **_summary(incident),
        "labels": dict(incident.labels),
        "acknowledged_at": _iso(incident.acknowledged_at), "acknowledged_by": incident.acknowledged_by,
        "resolved_at": _iso(incident.resolved_at), "resolved_by": incident.resolved_by,
        "route": incident.route, "runbook": incident.runbook, "channel": incident.channel,
        "timeline": [{"at": _iso(e.at), "actor": e.actor, "kind": e.kind, "detail": e.detail}
                     for e in timeline],
        "deliveries": [{"id": d.id, "target": d.target, "action": d.action, "state": d.state,
                        "attempts": d.attempts, "created_at": _iso(d.created_at),
                        "sent_at": _iso(d.sent_at), "last_error": d.last_error} for d in deliveries],
        "runs": [{"id": r.id, "runbook": r.runbook, "purpose": r.purpose, "status": r.status,
                  "requested_by": r.requested_by, "created_at": _iso(r.created_at),
                  "finished_at": _iso(r.finished_at),
                  "steps": [{"name": s.name, "kind": s.kind, "status": s.status,
                             "duration_s": s.duration_s, "output": s.output}
                            for s in steps.get(r.id or 0, [])]} for r in runs],
    }


def model_summaries(*, session: Session, since: datetime) -> list[dict[str, Any]]:
    """Each model with incidents triggered since `since`: how many, how many still open,
    the latest; most incidents first."""
    open_count = func.sum(case((col(Incident.state) != "resolved", 1), else_=0))
    rows = session.exec(
        select(Incident.model, func.count(), open_count, func.max(Incident.triggered_at))
        .where(col(Incident.model).is_not(None), Incident.triggered_at >= since)
        .group_by(Incident.model).order_by(func.count().desc(), col(Incident.model))
    ).all()
    return [{"model": model, "incidents": count, "open": opened or 0, "latest": _iso(latest)}
            for model, count, opened, latest in rows]


def model_changes(model: str, *, session: Session, since: datetime) -> list[dict[str, Any]]:
    """What the record knows changed about `model` since `since`, oldest first: each
    registry alias move (MLflow's webhooks or the bot's poll), each version its alerts
    named for the first time, and each rollback the bot ran."""
    first_seen = session.exec(
        select(Incident.version, func.min(Incident.triggered_at), func.min(Incident.id))
        .where(Incident.model == model, col(Incident.version).is_not(None))
        .group_by(Incident.version)
    ).all()
    changes = [{"at": _iso(at), "kind": "version seen", "incident": incident_id,
                "detail": f"alerts first named version {version}"}
               for version, at, incident_id in first_seen if at >= since]
    rollbacks = session.exec(
        select(TimelineEntry).join(Incident, TimelineEntry.incident_id == Incident.id)
        .where(Incident.model == model, TimelineEntry.kind == "rollback", TimelineEntry.at >= since)
    ).all()
    changes += [{"at": _iso(entry.at), "kind": "rollback", "incident": entry.incident_id,
                 "detail": entry.detail} for entry in rollbacks]
    changes += [{"at": _iso(move.moved_at), "kind": "alias moved", "incident": None,
                 "detail": f"{move.alias} v{move.from_version or '?'} → v{move.to_version or '(deleted)'}"
                           + (f" by {move.author}" if move.author else "")}
                for move in changes_between(session=session, since=since, model=model)]
    return sorted(changes, key=lambda change: change["at"])


def _summary(incident: Incident) -> dict[str, Any]:
    return {"id": incident.id, "state": incident.state, "tier": incident.tier, "title": incident.title,
            "model": incident.model, "version": incident.version, "environment": incident.environment,
            "severity": incident.severity, "team": incident.team, "source": incident.source,
            "paged": incident.paged, "alert_count": incident.alert_count,
            "triggered_at": _iso(incident.triggered_at), "last_alert_at": _iso(incident.last_alert_at)}


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()
