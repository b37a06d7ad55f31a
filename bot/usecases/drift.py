"""A drift detector's batch verdicts: counted, and turned into ModelDrift alerts.

The counters and the alerts they send are written in one transaction, so two replicas
taking batches of the same detector at once count every batch once and send each
alert change once: the counters are locked first, and a counter inserted by both
makes one commit fail, which is retried and then finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bot import store
from bot.domain.drift import DriftResult, counter_key, drift_alert, labels_for, step
from bot.pipeline import Pipeline
from bot.store import IngestResult
from bot.store.drift import CounterChange, locked_counters, save_counters

_CONFLICT_RETRIES = 3


async def record_batch(pipeline: Pipeline, results: Sequence[DriftResult]) -> IngestResult:
    """Count the verdicts and send the alert changes they make; returns what the alerts
    changed. Database errors propagate (the edge answers 503 to transient ones)."""
    routing = pipeline.routing
    labelled = [(result, labels_for(result, routing.drift_sources)) for result in results]
    keyed = [(result, labels, counter_key(result.detector, labels["model"],
                                          labels.get("feature", "")))
             for result, labels in labelled]

    def work(session: Session, now: datetime) -> IngestResult:
        found = locked_counters([key for _, _, key in keyed], session=session)
        counts = {key: row.clean_batches for key, row in found.items()}
        changes: dict[str, CounterChange] = {}
        alerts = []
        for result, labels, key in keyed:
            clean, status = step(counts.get(key), result.drifting, routing.drift_resolve_after)
            if clean is None:
                counts.pop(key, None)
            else:
                counts[key] = clean
            if clean != (found[key].clean_batches if key in found else None) or key in changes:
                changes[key] = CounterChange(result.detector, labels["model"],
                                             labels.get("feature", ""), clean)
            if status is not None:
                alerts.append(drift_alert(result, labels, status, key, now))
        save_counters(changes, found, session=session, now=now)
        if not alerts:
            return IngestResult()
        return store.apply_alerts([alerts], session=session, routing=routing,
                                  policy=pipeline.policy, now=now, runbooks=pipeline.runbooks)[0]

    for attempt in range(1, _CONFLICT_RETRIES + 1):
        try:
            return await pipeline.transact(work)
        except IntegrityError:
            if attempt == _CONFLICT_RETRIES:
                raise
    raise AssertionError("unreachable")
