"""Drift counters: loaded locked, written back, in the transaction that sends their alerts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from bot.models import DriftCounter


@dataclass(frozen=True, slots=True)
class CounterChange:
    detector: str
    model: str
    feature: str
    clean: int | None  # None: not drifting, nothing kept


def locked_counters(keys: Sequence[str], *, session: Session) -> dict[str, DriftCounter]:
    """The counters of `keys` that exist, locked until the transaction ends (in key order,
    so two replicas locking overlapping sets cannot deadlock). One not yet kept is not
    locked: two replicas inserting it at once make one commit fail, and the caller retries."""
    if not keys:
        return {}
    rows = session.exec(select(DriftCounter).where(col(DriftCounter.key).in_(sorted(set(keys))))
                        .order_by(col(DriftCounter.key)).with_for_update()).all()
    return {row.key: row for row in rows}


def save_counters(changes: Mapping[str, CounterChange], found: Mapping[str, DriftCounter], *,
                  session: Session, now: datetime) -> None:
    for key, change in changes.items():
        row = found.get(key)
        if change.clean is None:
            if row is not None:
                session.delete(row)
        elif row is None:
            session.add(DriftCounter(key=key, detector=change.detector, model=change.model,
                                     feature=change.feature, clean_batches=change.clean,
                                     drifting_since=now, updated_at=now))
        else:
            row.clean_batches, row.updated_at = change.clean, now
    session.flush()
