"""Read queries for Slack, the CLI and reports: an incident with its alerts, its timeline."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func
from sqlmodel import Session, col, select

from bot.domain.alert import AlertStatus
from bot.models import AlertOccurrence, Delivery, Incident, TimelineEntry
from bot.store.incidents import OPEN_STATES


@dataclass(frozen=True, slots=True)
class AlertSummary:
    """What an incident message shows of its alerts: counts, and the first alert's annotations."""

    total: int
    firing: int
    annotations: dict[str, Any]
    change_note: str | None = None  # the model change the incident followed (its timeline)


def _of_incident(statement: Any) -> Any:
    return statement.where(AlertOccurrence.incident_id == Incident.id).scalar_subquery()


_INCIDENT_WITH_ALERTS = select(
    Incident,
    _of_incident(select(func.count())),
    _of_incident(select(func.coalesce(func.sum(
        case((AlertOccurrence.status == AlertStatus.FIRING.value, 1), else_=0)), 0))),
    _of_incident(select(AlertOccurrence.annotations).order_by(col(AlertOccurrence.id)).limit(1)),
    select(TimelineEntry.detail).where(TimelineEntry.incident_id == Incident.id,
                                       TimelineEntry.kind == "model_change")
    .order_by(col(TimelineEntry.id).desc()).limit(1).scalar_subquery(),
).where(Incident.id == bindparam("incident_id"))
_PENDING_SYNCS = select(Delivery.id).where(
    Delivery.incident_id == bindparam("incident_id"),
    Delivery.target == "slack",
    Delivery.action == "sync",
    Delivery.state == "pending",
)


# On PostgreSQL the owed syncs come with the state, as one more column of the same
# statement: one round trip for what a Slack message needs.
_SYNC_IDS = select(func.array_agg(Delivery.id)).where(
    Delivery.incident_id == Incident.id, Delivery.target == "slack",
    Delivery.action == "sync", Delivery.state == "pending").scalar_subquery()
_MESSAGE_WITH_SYNCS = _INCIDENT_WITH_ALERTS.add_columns(_SYNC_IDS)


def incident_for_message(incident_id: int, *,
                         session: Session) -> tuple[Incident, AlertSummary, list[int]] | None:
    """An incident, what its message shows of its alerts, and the ids of the Slack syncs
    owed for it (all of which the message then satisfies).

    The syncs are read no later than the state: a sync committed after the state was
    read stays pending for another send. On PostgreSQL one statement (one snapshot)
    reads both; elsewhere the syncs first, then the state."""
    if session.get_bind().dialect.name == "postgresql":
        row = session.exec(_MESSAGE_WITH_SYNCS,  # type: ignore[call-overload]
                           params={"incident_id": incident_id}).first()
        if row is None:
            return None
        incident, total, firing, annotations, change_note, syncs = row
        return (incident, AlertSummary(total=total, firing=firing, annotations=annotations or {},
                                       change_note=change_note), sorted(syncs or []))
    syncs = pending_syncs(incident_id, session=session)
    found = incident_with_alerts(incident_id, session=session)
    return None if found is None else (found[0], found[1], syncs)


def incident_with_alerts(incident_id: int, *,
                         session: Session) -> tuple[Incident, AlertSummary] | None:
    """An incident and what its message shows of its alerts, in one statement."""
    row = session.exec(_INCIDENT_WITH_ALERTS,  # type: ignore[call-overload]
                       params={"incident_id": incident_id}).first()
    if row is None:
        return None
    incident, total, firing, annotations, change_note = row
    return incident, AlertSummary(total=total, firing=firing, annotations=annotations or {},
                                  change_note=change_note)


_EARLIER_POST = select(func.min(Delivery.first_attempt_at)).where(
    Delivery.incident_id == bindparam("incident_id"),
    Delivery.target == "slack",
    Delivery.action == "sync",
    Delivery.id != bindparam("delivery_id"),
)


def earlier_post_attempt(incident_id: int, delivery_id: int, *,
                         session: Session) -> datetime | None:
    """When another delivery first tried to post this incident's Slack message, if one did."""
    return session.exec(_EARLIER_POST, params={  # type: ignore[call-overload]
        "incident_id": incident_id, "delivery_id": delivery_id}).one()


def pending_syncs(incident_id: int, *, session: Session) -> list[int]:
    """Ids of the Slack syncs still owed for an incident, read with the state they will show."""
    return list(session.exec(_PENDING_SYNCS,  # type: ignore[call-overload]
                             params={"incident_id": incident_id}).all())


def timeline(incident_id: int, *, session: Session) -> list[TimelineEntry]:
    return list(session.exec(
        select(TimelineEntry).where(TimelineEntry.incident_id == incident_id)
        .order_by(col(TimelineEntry.id))
    ).all())


_OPEN_COUNTS = select(Incident.state, func.count()).where(
    col(Incident.state).in_(OPEN_STATES)).group_by(Incident.state)


def open_incident_counts(*, session: Session) -> dict[str, int]:
    """Open incidents by state: a count over the open states' range of ix_incident_state,
    so a scrape costs what is open, not the whole (ever-growing) record."""
    return dict(session.exec(_OPEN_COUNTS).all())  # type: ignore[arg-type]


