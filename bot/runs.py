"""Runs the runbook runs that were asked for: diagnostics when an incident opens, manual
runs, rollbacks. A run is a `pending` row until a worker leases it (so several replicas
share the work and a crash only delays it); each step's outcome is stored as it finishes
and the incident's thread reply is edited to show it (through the outbox). When the run
ends, its summary goes on the timeline and, for a paged incident, onto the PagerDuty
incident as a note; a rollback also records before and after and frees the model's lock.

A run that changes production is never started twice: once its lease has expired
(its process died mid-run), it is marked interrupted on the timeline and in the
thread and its model's lock is freed; only a new preview and confirmation run it
again. The same holds for a confirmed rollback that has not started within the
confirmation's ten minutes. Diagnostics, which change nothing, are simply run again.
A process renews the leases of the runs it is running every third of a lease.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from anyio import to_thread
from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from bot import store
from bot.clock import Clock, utcnow
from bot.db import Database
from bot.domain.confirmations import not_to_start
from bot.models import AlertOccurrence, Delivery, Incident, RollbackLock, RunbookRun, StepResult
from bot.runbooks import (
    Runbook,
    RunbookError,
    RunContext,
    RunResult,
    StepOutcome,
    resolve_params,
    run,
)
from bot.store import DeliveryPolicy
from bot.worker_loop import claim_and_run

log = logging.getLogger(__name__)

CONCURRENCY = 4
_ICONS = {"passed": "✅", "failed": "❌", "error": "⚠️", "timeout": "⏱️", "skipped": "⏭️"}


def summary(runbook: str, status: str, outcomes: list[StepResult] | list[StepOutcome]) -> str:
    """One paragraph for the timeline and the PagerDuty note; first, what was not set
    when steps were skipped for it."""
    missing = sorted({name for step in outcomes for name in (step.values or {}).get("missing", ())})
    lines = [f"{runbook}: {status}" + (f" — steps skipped: {', '.join(missing)} not set" if missing else "")]
    for step in outcomes:
        first_line = (step.output or "").strip().splitlines()[:1]
        lines.append(f"{_ICONS.get(step.status, '•')} {step.name} ({step.status}, "
                     f"{step.duration_s:.1f}s){': ' + first_line[0] if first_line else ''}")
    return "\n".join(lines)


def first_alert(incident: Incident | None, *, session: Session) -> AlertOccurrence | None:
    """The incident's first alert: its labels and annotations fill a run's params."""
    if incident is None:
        return None
    return session.exec(select(AlertOccurrence).where(
        AlertOccurrence.incident_id == incident.id)
        .order_by(col(AlertOccurrence.id)).limit(1)).first()


def rollback_runbook(runbooks: Mapping[str, Runbook], labels: Mapping[str, str]) -> Runbook | None:
    """The first runbook that changes production and serves these labels (a model's rollback)."""
    for runbook in runbooks.values():
        if runbook.changes_production and all(m.matches(labels) for m in runbook.matchers):
            return runbook
    return None


class RunWorker:
    def __init__(self, db: Database, *, runbooks: Mapping[str, Runbook], policy: DeliveryPolicy,
                 context: Callable[..., RunContext], on_owed: Callable[[], None],
                 poll_seconds: float, lease: timedelta, clock: Clock = utcnow) -> None:
        self.db = db
        self.runbooks = runbooks
        self.policy = policy
        self.context = context
        self.on_owed = on_owed
        self.poll_seconds = poll_seconds
        self.lease = lease
        self.clock = clock
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._leased: set[int] = set()  # ids of the runs this process is running

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Run requested runbook runs until cancelled."""
        if self.db.is_sqlite:
            await to_thread.run_sync(self._release_leases)
        keeper = asyncio.create_task(self._keep_leases(), name="runbook-leases")
        try:
            await claim_and_run(claim=self._claim, handle=self.execute, in_flight=self._running,
                                concurrency=CONCURRENCY, wake=self._wake,
                                poll_seconds=self.poll_seconds, what="runbook runs")
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    def _claim(self, limit: int) -> list[int]:
        now = self.clock()
        with self.db.read() as session:  # most wakes find nothing: no write lock for them
            candidates = session.exec(
                select(RunbookRun.id, RunbookRun.runbook, RunbookRun.purpose,
                       RunbookRun.status, RunbookRun.created_at).where(
                    col(RunbookRun.status).in_(["pending", "running"]),
                    (col(RunbookRun.lease_until).is_(None)) | (col(RunbookRun.lease_until) < now))
                .order_by(col(RunbookRun.id)).limit(limit)).all()
        if not candidates:
            return []
        with self.db.write() as session:
            claimed = []
            for run_id, runbook, purpose, status, created_at in candidates:
                why = self._not_to_resume(runbook, purpose, status, created_at, now)
                if why is not None:
                    self._interrupt(run_id, why, session=session, now=now)
                    continue
                taken = session.exec(  # type: ignore[call-overload]
                    update(RunbookRun).where(
                        col(RunbookRun.id) == run_id,
                        col(RunbookRun.status).in_(["pending", "running"]),  # not finished since
                        (col(RunbookRun.lease_until).is_(None))
                        | (col(RunbookRun.lease_until) < now))
                    .values(lease_until=now + self.lease, status="running",
                            started_at=now))
                if taken.rowcount == 1:
                    claimed.append(run_id)
        if len(claimed) < len(candidates):
            self.on_owed()
        return claimed

    def _not_to_resume(self, runbook: str, purpose: str, status: str, created_at: datetime,
                       now: datetime) -> str | None:
        known = self.runbooks.get(runbook)
        return not_to_start(
            changes_production=purpose == "rollback" or bool(known and known.changes_production),
            started=status == "running", requested_at=created_at, now=now)

    def _interrupt(self, run_id: int, why: str, *, session: Session, now: datetime) -> None:
        """Mark a production-changing run interrupted, say so, and free its model's lock."""
        marked = session.exec(  # type: ignore[call-overload]
            update(RunbookRun).where(col(RunbookRun.id) == run_id,
                                     col(RunbookRun.status).in_(["pending", "running"]))
            .values(status="interrupted", finished_at=now, lease_until=None))
        if marked.rowcount != 1:  # another replica got there first
            return
        record = session.get(RunbookRun, run_id)
        session.exec(delete(RollbackLock).where(  # type: ignore[call-overload]
            col(RollbackLock.run_id) == run_id))
        incident = session.get(Incident, record.incident_id) if record and record.incident_id \
            else None
        if record is None or incident is None:
            return
        params = record.params
        detail = (f"run #{run_id} of {record.runbook} ({params.get('model')}@"
                  f"{params.get('alias', 'champion')} → v{params.get('target_version') or '?'}, "
                  f"confirmed by {record.requested_by}) interrupted: {why}. It will not run "
                  "again without a new preview and confirmation.")
        store.add_timeline(incident, "rollback_interrupted", detail, session=session,
                           actor="bot", now=now)
        self._owe_progress(record, session, now)
        store.owe(incident, "noted", session=session, policy=self.policy, now=now,
                  reply=f"Rollback run #{run_id} was interrupted: {why}. It will not run again "
                        "without a new preview and confirmation.")

    def _release_leases(self) -> None:
        """On SQLite one process runs the bot: the leases found at start were left by a
        process that is gone, so its runs need not wait them out."""
        with self.db.write() as session:
            session.exec(update(RunbookRun).where(  # type: ignore[call-overload]
                col(RunbookRun.status).in_(["pending", "running"]),
                col(RunbookRun.lease_until).is_not(None)).values(lease_until=None))

    async def _keep_leases(self) -> None:
        """Renew the leases of the runs in flight, so that only a dead process's expire."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            if self._leased:
                try:
                    await to_thread.run_sync(self._renew, sorted(self._leased))
                except Exception:
                    log.exception("could not renew runbook run leases; retrying")

    def _renew(self, run_ids: list[int]) -> None:
        with self.db.write() as session:
            session.exec(update(RunbookRun).where(  # type: ignore[call-overload]
                col(RunbookRun.id).in_(run_ids), col(RunbookRun.status) == "running")
                .values(lease_until=self.clock() + self.lease))

    async def execute(self, run_id: int) -> None:
        """Run one leased run to its end; a failure of ours marks it `error`, never loses it."""
        self._leased.add(run_id)
        try:
            await self._execute(run_id)
        except Exception as exc:
            log.exception("runbook run %s failed", run_id)
            await to_thread.run_sync(self._finish, run_id, "error", f"the bot failed: {exc}")
        finally:
            self._leased.discard(run_id)

    async def _execute(self, run_id: int) -> None:
        record, incident, alert = await to_thread.run_sync(self._load, run_id)
        runbook = self.runbooks.get(record.runbook)
        if runbook is None:
            await to_thread.run_sync(self._finish, run_id, "error",
                                     f"no runbook named {record.runbook!r} is loaded")
            return
        labels = dict(alert.labels) if alert else dict(incident.labels if incident else {})
        annotations = dict(alert.annotations) if alert else {}
        try:
            params = resolve_params(runbook, labels, annotations, record.params)
        except RunbookError as exc:
            await to_thread.run_sync(self._finish, run_id, "error", str(exc))
            return
        facts = ({"id": incident.id, "title": incident.title, "model": incident.model,
                  "version": incident.version, "environment": incident.environment}
                 if incident else {})
        context = self.context(labels=labels, annotations=annotations, incident=facts)

        async def on_step(position: int, outcome: StepOutcome) -> None:
            await to_thread.run_sync(self._record_step, run_id, position, outcome)
            self.on_owed()

        result: RunResult = await run(runbook, params, context=context, on_step=on_step)
        await to_thread.run_sync(self._finish, run_id, result.status, None, params)

    def _load(self, run_id: int) -> tuple[RunbookRun, Incident | None, AlertOccurrence | None]:
        with self.db.read() as session:
            record = session.get(RunbookRun, run_id)
            if record is None:
                raise LookupError(f"runbook run {run_id} is gone")
            incident = session.get(Incident, record.incident_id) if record.incident_id else None
            return record, incident, first_alert(incident, session=session)

    def _record_step(self, run_id: int, position: int, outcome: StepOutcome) -> None:
        now = self.clock()
        with self.db.write() as session:
            session.exec(delete(StepResult).where(  # type: ignore[call-overload]
                col(StepResult.run_id) == run_id, col(StepResult.position) == position))
            session.add(StepResult(run_id=run_id, position=position, name=outcome.name,
                                   kind=outcome.kind, status=outcome.status,
                                   started_at=outcome.started_at, duration_s=outcome.duration_s,
                                   output=outcome.output, values=_jsonable(outcome.values)))
            record = session.get(RunbookRun, run_id)
            if record is not None:
                self._owe_progress(record, session, now)

    def _owe_progress(self, record: RunbookRun, session: Session, now: datetime) -> None:
        """Edit (or first post) the run's reply in the incident's thread."""
        if record.incident_id is None or not self.policy.slack:
            return
        incident = session.get(Incident, record.incident_id)
        if incident is None or incident.silence_id is not None or incident.tier == "record":
            return
        session.add(Delivery(incident_id=record.incident_id, target="slack", action="run_sync",
                             payload={"run_id": record.id}, created_at=now, next_attempt_at=now))

    def _finish(self, run_id: int, status: str, problem: str | None,
                params: dict[str, Any] | None = None) -> None:
        now = self.clock()
        with self.db.write() as session:
            record = session.get(RunbookRun, run_id)
            if record is None:
                return
            record.status, record.finished_at, record.lease_until = status, now, None
            if params is not None:
                record.params = _jsonable(params)
            steps = list(session.exec(select(StepResult).where(StepResult.run_id == run_id)
                                      .order_by(col(StepResult.position))).all())
            text = summary(record.runbook, status, steps) + (f"\n{problem}" if problem else "")
            incident = session.get(Incident, record.incident_id) if record.incident_id else None
            if record.purpose == "rollback":
                self._finish_rollback(record, steps, status, problem, incident, session, now)
            elif incident is not None:
                store.add_timeline(incident, "diagnostics", text, session=session,
                                   actor=record.requested_by, now=now)
            if record.answer_url or record.answer_channel:  # asked for from Slack
                session.add(Delivery(incident_id=None, target="slack", action="answer",
                                     payload={"run_id": run_id}, created_at=now,
                                     next_attempt_at=now))
            if incident is not None:
                self._owe_progress(record, session, now)
                if incident.paged and self.policy.pagerduty_notes:
                    session.add(Delivery(incident_id=incident.id, target="pagerduty_rest",
                                         action="note", created_at=now, next_attempt_at=now,
                                         payload={"incident_key": incident.key,
                                                  "content": text[:25_000]}))
        self.on_owed()

    def _finish_rollback(self, record: RunbookRun, steps: list[StepResult], status: str,
                         problem: str | None, incident: Incident | None, session: Session,
                         now: datetime) -> None:
        values = {step.name: step.values for step in steps}
        before = values.get("set_alias", {}).get("previous_version") or values.get(
            "what_changed", {}).get("current_version")
        after = values.get("set_alias", {}).get("version")
        health = next((s for s in steps if s.name == "healthy"), None)
        outcome = "succeeded" if status == "passed" else "failed"
        detail = (f"{outcome}: {record.params.get('model')}@{record.params.get('alias', 'champion')}"
                  f" v{before or '?'} → v{after or '?'}, confirmed by {record.requested_by}; "
                  f"health check after: {health.status if health else 'not run'}"
                  + (f" ({health.output.strip().splitlines()[0]})" if health and health.output
                     else "") + (f"; {problem}" if problem else ""))
        if incident is not None:
            store.add_timeline(incident, "rollback", detail, session=session,
                               actor=record.requested_by, now=now)
        session.exec(delete(RollbackLock).where(  # type: ignore[call-overload]
            col(RollbackLock.run_id) == record.id))


def _jsonable(values: Any) -> Any:
    """Step values as JSON can store them (datetimes and the like become text)."""
    return json.loads(json.dumps(values, default=str))
