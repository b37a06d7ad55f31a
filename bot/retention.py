"""Retention: delete what is past its time, in small batches, off the hot path.

Each statement deletes at most `batch` rows in a transaction of its own, with a short
pause between, so intake never waits long behind a prune and a prune interrupted
anywhere (a crash, a restart) simply resumes on the next run. Every delete is
idempotent: replicas that prune at the same time delete each row once between them.

What goes (see domain.retention for the cutoffs): occurrences of incidents resolved
before the cutoff, sent and failed deliveries, PagerDuty webhook receipts and runbook
step results older than RETENTION_DAYS; and, only if INCIDENT_RETENTION_DAYS is set,
incidents resolved before that cutoff with everything that refers to them. Open
incidents, their occurrences and pending deliveries are never touched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from anyio import to_thread
from sqlalchemy import Select, bindparam, delete, select
from sqlmodel import SQLModel, col

from bot.db import Database
from bot.domain.retention import Cutoffs, prune_incident
from bot.models import (
    AlertOccurrence,
    Delivery,
    Incident,
    RunbookRun,
    StepResult,
    TimelineEntry,
    WebhookReceipt,
)

log = logging.getLogger(__name__)

BATCH = 1000
# Incidents deleted per transaction when INCIDENT_RETENTION_DAYS is set: each takes its
# timeline, occurrences, deliveries and runs with it.
INCIDENT_BATCH = 50
PAUSE_SECONDS = 0.05

_CUTOFF = bindparam("cutoff")


def _unindexed(column: Any) -> Any:
    """The column as an expression no index serves: SQLite has no statistics (the bot
    never runs ANALYZE) and would otherwise scan by the state index, i.e. every
    resolved incident or sent delivery, instead of the range of old ones by time."""
    return column.concat("")


def _old_rows() -> dict[str, tuple[type[SQLModel], Select[tuple[int]]]]:
    """Per kind, its table and the ids of up to :limit old rows (an indexed range scan
    each: migration 0009), locked on PostgreSQL, skipping rows another replica's prune
    holds (SQLite serializes writers anyway)."""
    limit = bindparam("limit")
    kinds: dict[str, tuple[type[SQLModel], Select[tuple[int]]]] = {
        # Correlated, so the old occurrences are found by time and each incident by id.
        "occurrences": (AlertOccurrence, select(AlertOccurrence.id).where(
            AlertOccurrence.first_seen_at < _CUTOFF,
            select(Incident.id).where(Incident.id == AlertOccurrence.incident_id,
                                      _unindexed(Incident.state) == "resolved",
                                      col(Incident.resolved_at) < _CUTOFF).exists(),
        ).limit(limit)),
        "deliveries": (Delivery, select(Delivery.id).where(
            Delivery.created_at < _CUTOFF,
            _unindexed(Delivery.state).in_(("sent", "failed"))).limit(limit)),
        "webhook_receipts": (WebhookReceipt, select(WebhookReceipt.id).where(
            WebhookReceipt.received_at < _CUTOFF).limit(limit)),
        "step_results": (StepResult, select(StepResult.id).where(
            StepResult.started_at < _CUTOFF).limit(limit)),
    }
    return {kind: (table, old.with_for_update(skip_locked=True))
            for kind, (table, old) in kinds.items()}


_OLD_ROWS = _old_rows()


@dataclass(slots=True)
class Pruned:
    """Rows deleted, by kind."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, count: int) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + count

    def __str__(self) -> str:
        return ", ".join(f"{count} {kind}" for kind, count in sorted(self.counts.items())
                         if count) or "nothing"


def prune(db: Database, cutoffs: Cutoffs, *, batch: int = BATCH,
          pause: float = PAUSE_SECONDS) -> Pruned:
    """Delete everything past `cutoffs`, batch by batch, until nothing old is left.
    Database errors propagate; what was deleted before one stays deleted."""
    pruned = Pruned()
    if cutoffs.incidents is not None:
        while count := _prune_incidents(db, cutoffs.incidents, min(batch, INCIDENT_BATCH),
                                        pruned):
            pruned.add("incidents", count)
            time.sleep(pause)
    for kind, (table, old) in _OLD_ROWS.items():
        while True:
            with db.write() as session:
                ids = session.execute(old, {"cutoff": cutoffs.records,
                                            "limit": batch}).scalars().all()
                if ids:
                    session.execute(delete(table).where(col(table.id).in_(ids)))
            pruned.add(kind, len(ids))
            if len(ids) < batch:
                break
            time.sleep(pause)
    return pruned


def _prune_incidents(db: Database, cutoff: datetime, batch: int, pruned: Pruned) -> int:
    """Delete up to `batch` incidents resolved before `cutoff`, with their timeline,
    occurrences, deliveries, runs and step results, in one transaction. The incident
    rows are locked first (PostgreSQL; one another transaction holds is skipped this
    time), so one reopened meanwhile is seen open and kept."""
    with db.write() as session:
        candidates = session.execute(
            select(Incident.id, Incident.state, Incident.resolved_at)
            .where(_unindexed(Incident.state) == "resolved", col(Incident.resolved_at) < cutoff)
            .order_by(col(Incident.resolved_at)).limit(batch)
            .with_for_update(skip_locked=True)).all()
        ids = [row.id for row in candidates
               if prune_incident(state=row.state, resolved_at=row.resolved_at, cutoff=cutoff)]
        if not ids:
            return 0
        runs = select(RunbookRun.id).where(col(RunbookRun.incident_id).in_(ids))
        for kind, statement in (
            ("step_results", delete(StepResult).where(col(StepResult.run_id).in_(runs))),
            ("runs", delete(RunbookRun).where(col(RunbookRun.incident_id).in_(ids))),
            ("deliveries", delete(Delivery).where(col(Delivery.incident_id).in_(ids))),
            ("timeline", delete(TimelineEntry).where(col(TimelineEntry.incident_id).in_(ids))),
            ("occurrences", delete(AlertOccurrence).where(
                col(AlertOccurrence.incident_id).in_(ids))),
            ("incidents", delete(Incident).where(col(Incident.id).in_(ids))),
        ):
            result = session.execute(statement)
            if kind != "incidents":
                pruned.add(kind, result.rowcount)
        return len(ids)


async def run_periodically(db: Database, cutoffs_at: Callable[[], Cutoffs], *,
                           every_seconds: float) -> None:
    """Until cancelled: prune every `every_seconds`, the first time one period after
    start (at most five minutes), not while a restarted bot catches up on intake. A
    failed prune (database down) is logged and tried again next time."""
    await asyncio.sleep(min(every_seconds, 300.0))
    while True:
        started = time.monotonic()
        try:
            pruned = await to_thread.run_sync(prune, db, cutoffs_at())
            log.info("retention: deleted %s in %.1fs", pruned, time.monotonic() - started)
        except Exception:
            log.exception("retention prune failed; trying again in %.0fs", every_seconds)
        await asyncio.sleep(every_seconds)
