"""An open incident's alert found by its fingerprint alone, for senders that name an alert
only by its key (PagerDuty's Events API: acknowledge and resolve carry just a dedup_key)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from bot.models import AlertOccurrence, Incident
from bot.store.incidents import OPEN_STATES


@dataclass(frozen=True, slots=True)
class OpenAlert:
    incident_id: int
    labels: dict[str, str]


def open_alert(fingerprint: str, *, session: Session) -> OpenAlert | None:
    """The alert of that fingerprint in an open incident (the newest, should several
    open incidents hold one). Reached through the open incidents (ix_incident_state)
    and the (incident, fingerprint) unique index, so it never scans the occurrences."""
    row = session.exec(
        select(AlertOccurrence.incident_id, AlertOccurrence.labels)
        .join(Incident, col(Incident.id) == col(AlertOccurrence.incident_id))
        .where(col(Incident.state).in_(OPEN_STATES), AlertOccurrence.fingerprint == fingerprint)
        .order_by(col(AlertOccurrence.incident_id).desc()).limit(1)).first()
    if row is None:
        return None
    return OpenAlert(incident_id=row[0], labels={str(k): str(v) for k, v in row[1].items()})
