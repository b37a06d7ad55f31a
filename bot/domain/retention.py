"""What retention deletes: the cutoffs, decided from `now` and the configured periods.

Kept apart from the queries (bot/retention.py) so the decision is table-tested
without a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Rows from before `records` are old: occurrences of incidents resolved before it,
    sent and failed deliveries owed before it, webhook receipts and runbook step results.
    `incidents`, when set: incidents resolved before it go, with all that refers to them."""

    records: datetime
    incidents: datetime | None = None


def cutoffs(now: datetime, *, retention_days: int,
            incident_retention_days: int | None) -> Cutoffs:
    """The cutoffs for a prune at `now`. Incidents are the record and are kept forever
    unless `incident_retention_days` is set."""
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    if incident_retention_days is not None and incident_retention_days < 1:
        raise ValueError("incident_retention_days must be at least 1")
    return Cutoffs(
        records=now - timedelta(days=retention_days),
        incidents=None if incident_retention_days is None
        else now - timedelta(days=incident_retention_days),
    )


def prune_incident(*, state: str, resolved_at: datetime | None, cutoff: datetime | None) -> bool:
    """Whether an incident goes: only a resolved one, resolved before the cutoff, and only
    when incident retention is configured. An open incident is never deleted."""
    return (cutoff is not None and state == "resolved" and resolved_at is not None
            and resolved_at < cutoff)
