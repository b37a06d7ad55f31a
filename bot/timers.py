"""Timers: APScheduler 3 with its jobs in the bot's own database, so they survive restarts.

The jobs are derived from the incidents (see domain.escalation): a reconcile
pass, at start and every few seconds, adds the timers open incidents should have
and removes those they no longer need; silences that end the shift handoff and
the weekly scorecard are scheduled the same way. Only one process runs the scheduler: on PostgreSQL
the holder of an advisory lock (held on a connection of its own, so it is freed
when the holder dies and another replica takes over); on SQLite the single bot
process. Firing is idempotent (the incident row is locked and the timeline says
whether the timer was already acted on), so even an overlap at takeover cannot
act twice.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from anyio import to_thread
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from sqlalchemy import Connection, Engine, text
from sqlmodel import Session, col, select

from bot import charts, store
from bot.db import Database
from bot.domain.escalation import Timer, TimerKind, timers_for
from bot.domain.messages import (
    LONG_MESSAGE_TEXT,
    Mrkdwn,
    cut,
    handoff_digest_text,
    md,
    silence_ended_text,
)
from bot.domain.routing import ChannelSchedule, RoutingConfig
from bot.incident_actions import clocks_of, fire_timer
from bot.models import Delivery, Incident, Silence
from bot.pipeline import Pipeline
from bot.ports import OnCall, OnCallShift, OnCallUnavailable
from bot.reports import chart_upload, scorecard_for, weekly_post
from bot.store import DeliveryPolicy
from bot.usecases.pulse import open_pulse

log = logging.getLogger(__name__)
# APScheduler logs every job added, paused-for and run at INFO: hundreds of lines in an
# alert storm, saying less than the incidents' timelines do.
logging.getLogger("apscheduler").setLevel(logging.WARNING)

_LEADER_LOCK = 7305_0002
# The lock connection's name in pg_stat_activity.
LEADER_APPLICATION_NAME = "oncall-bot timer leader"
# Whether this session holds the leader lock: a one-bigint-key advisory lock shows in
# pg_locks as classid (high 32 bits), objid (low 32 bits) and objsubid 1.
_HOLDS_LOCK = text("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                   "AND pid = pg_backend_pid() AND granted AND classid = 0 "
                   "AND objid::bigint = :k AND objsubid = 1)")
# Seconds between two job store writes of a reconcile: a burst of them (hundreds of
# new incidents in a storm) would otherwise keep the database's write lock and the
# GIL from intake, whose commits wait out SQLite's busy handler behind it.
_JOBS_TABLE = "apscheduler_jobs"
_PACE = 0.002
# Intake load (Pipeline.load) above which a reconcile adds only the timers due within
# _STORM_HORIZON.
_STORM_LOAD = 0.5
_STORM_HORIZON = timedelta(minutes=2)
_active: TimerService | None = None  # set while started: jobs must name an importable callable


def occurrence(schedule: ChannelSchedule, now: datetime) -> datetime:
    """The cron's latest fire time at or before `now`: which occurrence a firing job
    answers, late (missed while no process ran) or twice (at a takeover). Looked for
    in a window that doubles until it holds one, so any schedule costs a few steps."""
    trigger = CronTrigger.from_crontab(schedule.cron, timezone=schedule.timezone)
    span = timedelta(minutes=2)
    while True:
        fire = trigger.get_next_fire_time(None, now - span)
        if fire is not None and fire <= now:
            while (later := trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
                   ) is not None and later <= now:
                fire = later
            return fire.astimezone(UTC)
        if span > timedelta(days=800):
            return now  # a cron that never fired (29 February only, say): this moment
        span *= 2


async def run_job(kind: str, subject_id: int) -> None:
    """The one job function APScheduler stores (pickled by reference)."""
    active = _active
    if active is None:
        return
    if not await to_thread.run_sync(active.still_leading):
        # The job is gone from the store; whoever leads next re-adds it (reconcile).
        log.warning("timer %s for %s not fired: this process no longer holds the "
                    "timer leader lock", kind, subject_id)
        return
    await active.fire(kind, subject_id)


class TimerService:
    def __init__(self, db: Database, *, pipeline: Pipeline, routing: RoutingConfig,
                 policy: DeliveryPolicy, oncall: OnCall | None,
                 reconcile_seconds: float) -> None:
        self.db = db
        self.pipeline = pipeline
        self.routing = routing
        self.policy = policy
        self.oncall = oncall
        self.reconcile_seconds = reconcile_seconds
        self.scheduler: AsyncIOScheduler | None = None
        self._lock_engine: Engine | None = None
        self._lock_connection: Connection | None = None
        # The lock connection is used from the round's thread and from firing timers.
        self._lock_guard = threading.Lock()

    # -- leadership -----------------------------------------------------------------

    def _try_lead(self) -> bool:
        """Whether this process may run the scheduler this round. A leader proves each
        round that its lock connection still holds the lock; one that cannot (the
        connection died, the server restarted) answers False, and so stops scheduling,
        and only tries to take the lock again the round after."""
        if self.db.is_sqlite:
            return True
        with self._lock_guard:
            if self._lock_connection is not None:
                if self._holds_lock():
                    return True
                log.warning("lost the timer leader lock (its connection is gone); "
                            "this process stops running the timers")
                self._release_lock_connection()
                return False
            if self._lock_engine is None:
                self._lock_engine = self.db.lock_engine(LEADER_APPLICATION_NAME)
            connection = self._lock_engine.connect()
            try:
                taken = connection.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                           {"k": _LEADER_LOCK}).scalar()
            except Exception:
                connection.close()
                raise
            if taken:
                self._lock_connection = connection
                return True
            connection.close()
            return False

    def _holds_lock(self) -> bool:
        """Ask the server, on the lock connection itself, whether it still holds the
        lock; any error means it cannot tell, which counts as no. Caller holds
        _lock_guard."""
        assert self._lock_connection is not None
        try:
            return bool(self._lock_connection.execute(_HOLDS_LOCK, {"k": _LEADER_LOCK}).scalar())
        except Exception:
            return False

    def _release_lock_connection(self) -> None:
        if self._lock_connection is not None:
            try:
                self._lock_connection.close()
            except Exception:  # already dead: nothing to release
                pass
            self._lock_connection = None

    def still_leading(self) -> bool:
        """Checked before a timer acts: a job APScheduler fires between two rounds must
        not act once the lock is lost (another replica may lead already)."""
        if self.db.is_sqlite:
            return True
        with self._lock_guard:
            return self._lock_connection is not None and self._holds_lock()

    async def run(self) -> None:
        """Until cancelled: lead when possible, and while leading, reconcile timers."""
        global _active
        try:
            while True:
                try:
                    leading = await to_thread.run_sync(self._try_lead)
                    if leading and self.scheduler is None:
                        self._start_scheduler()
                        _active = self
                        log.info("this process now runs the timers")
                    elif not leading and self.scheduler is not None:
                        self._stop_scheduler()
                    if self.scheduler is not None:
                        await to_thread.run_sync(self.reconcile)
                except Exception:
                    log.exception("timer round failed; retrying")
                await asyncio.sleep(self.reconcile_seconds)
        finally:
            if _active is self:
                _active = None
            self._stop_scheduler()
            with self._lock_guard:
                self._release_lock_connection()
            if self._lock_engine is not None:
                self._lock_engine.dispose()

    def _start_scheduler(self) -> None:
        store_engine = self.db.jobstore_engine()
        scheduler = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=store_engine,
                                                     tablename=_JOBS_TABLE)},
            # A timer missed while no process ran still fires, once, on start.
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        scheduler.start()  # raises if the job store cannot be reached: retried next round
        self.scheduler = scheduler
        for name, schedule in self._schedules():
            if schedule is not None:
                scheduler.add_job(run_job, CronTrigger.from_crontab(
                    schedule.cron, timezone=schedule.timezone), args=[name, 0], id=name,
                    replace_existing=True)
            elif scheduler.get_job(name) is not None:
                scheduler.remove_job(name)

    def _schedules(self) -> tuple[tuple[str, ChannelSchedule | None], ...]:
        """The cron jobs from the routing file (their job ids are their names)."""
        return (("handoff", self.routing.handoff), ("weekly_report", self.routing.weekly_report),
                ("pulse", self.routing.pulse))

    def _stop_scheduler(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None

    # -- reconcile ----------------------------------------------------------------

    def desired(self, session: Session, now: datetime) -> dict[str, tuple[str, int, datetime]]:
        """Job id → (kind, subject id, due time) for every timer that should exist."""
        wanted: dict[str, tuple[str, int, datetime]] = {}
        # The columns clocks_of reads, not whole incidents: a storm leaves thousands open.
        incidents = session.exec(select(
            Incident.id, Incident.tier, Incident.state, Incident.silence_id,
            Incident.triggered_at, Incident.acknowledged_at,
        ).where(col(Incident.state).in_(store.OPEN_STATES))).all()
        for clock in clocks_of(incidents, session=session):  # type: ignore[arg-type]
            timers: list[Timer] = timers_for(clock, self.routing.escalation)
            for timer in timers:
                wanted[f"timer:{timer.job_id}"] = (timer.kind.value, timer.incident_id,
                                                   timer.due_at)
        for silence in session.exec(select(Silence).where(Silence.ends_at > now)).all():
            wanted[f"silence_end:{silence.id}"] = ("silence_end", silence.id,  # type: ignore[assignment]
                                                   silence.ends_at)
        return wanted

    def reconcile(self) -> None:
        scheduler = self.scheduler
        if scheduler is None:
            return
        now = self.pipeline.clock()
        with self.db.read() as session:
            wanted = self.desired(session, now)
            # The job store's own table, read without unpickling every job.
            existing: dict[str, float | None] = dict(session.exec(  # type: ignore[call-overload]
                text(f"SELECT id, next_run_time FROM {_JOBS_TABLE}")).all())
        for name, _ in self._schedules():
            existing.pop(name, None)
        stale = existing.keys() - wanted.keys()
        changed = [(job_id, kind, subject, due_at)
                   for job_id, (kind, subject, due_at) in wanted.items()
                   if job_id not in existing or existing[job_id] is None
                   or abs(existing[job_id] - due_at.timestamp()) > 0.001]
        if self.pipeline.load() > _STORM_LOAD:
            # An alert storm: hundreds of new incidents, each a job to add. Only the
            # timers falling due soon are added now; the others are derived from the
            # incidents again by a later round, once intake has calmed down.
            soon = now + max(_STORM_HORIZON, timedelta(seconds=3 * self.reconcile_seconds))
            changed = [change for change in changed if change[3] <= soon]
        if not stale and not changed:
            return
        # Paused, the scheduler does not look for due jobs after every change (on the
        # event loop, reading the job store); it looks once, when resumed.
        scheduler.pause()
        try:
            for job_id in stale:
                scheduler.remove_job(job_id)
                time.sleep(_PACE)
            for job_id, kind, subject, due_at in changed:
                scheduler.add_job(run_job, DateTrigger(run_date=due_at), args=[kind, subject],
                                  id=job_id, replace_existing=True)
                time.sleep(_PACE)
        finally:
            scheduler.resume()

    # -- firing ---------------------------------------------------------------------

    async def fire(self, kind: str, subject_id: int) -> None:
        if kind == "handoff":
            text_ = await self.handoff_digest()
            await self.pipeline.transact(lambda session, now: self._post(
                session, now, self.routing.handoff.channel if self.routing.handoff else None,
                text_))
            return
        if kind == "weekly_report":
            await to_thread.run_sync(charts.available)  # matplotlib loads outside the transaction
            await self.pipeline.transact(self._weekly_report)
            return
        if kind == "pulse" and self.routing.pulse is not None:
            schedule = self.routing.pulse
            key = f"{occurrence(schedule, self.pipeline.clock()):%Y-%m-%dT%H:%M%z}"
            opened = await self.pipeline.transact(lambda session, now: open_pulse(
                key, schedule.channel or self.policy.default_channel, session=session, now=now,
                policy=self.policy))
            log.info("pulse %s: %s", key, f"opened #{opened}" if opened else "not opened "
                     "(opened already, or Slack is not configured)")
            return
        if kind == "silence_end":
            await self.pipeline.transact(lambda session, now: self._silence_ended(
                session, now, subject_id))
            return
        outcome = await self.pipeline.transact(lambda session, now: fire_timer(
            TimerKind(kind), subject_id, routing=self.routing, session=session,
            policy=self.policy, now=now))
        log.info("timer %s for incident %s: %s", kind, subject_id, outcome)

    def _post(self, session: Session, now: datetime, channel: str | None, text_: Mrkdwn,
              blocks: list[dict[str, object]] | None = None,
              chart: dict[str, Any] | None = None) -> None:
        """Owe a channel message; with `chart`, the chart is shared after it (one delivery,
        so in that order)."""
        if self.policy.slack:
            payload: dict[str, Any] = {"channel": channel or self.policy.default_channel,
                                       "text": cut(text_, LONG_MESSAGE_TEXT),
                                       "blocks": blocks or []}
            if chart is not None:
                payload["chart"] = chart
            session.add(Delivery(incident_id=None, target="slack", action="post",
                                 payload=payload, created_at=now, next_attempt_at=now))

    def _weekly_report(self, session: Session, now: datetime) -> None:
        scorecard = scorecard_for(session=session, since=now - timedelta(days=7), until=now,
                                  now=now, routing=self.routing)
        text_, blocks = weekly_post(scorecard)
        channel = self.routing.weekly_report.channel if self.routing.weekly_report else None
        self._post(session, now, channel, text_, blocks,
                   chart_upload(scorecard, comment=md("Scorecard chart, {:%b %d} – {:%b %d}",
                                                      scorecard.since, scorecard.until)))

    def _silence_ended(self, session: Session, now: datetime, silence_id: int) -> None:
        silence = session.get(Silence, silence_id)
        if silence is None or silence.ends_at > now:
            return  # extended, or gone
        self._post(session, now, None, silence_ended_text(silence))

    async def handoff_digest(self) -> Mrkdwn:
        now = self.pipeline.clock()
        since = now - timedelta(hours=24)
        with self.db.read() as session:
            during = session.exec(select(Incident).where(Incident.triggered_at >= since)
                                  .order_by(col(Incident.id))).all()
            still_open = session.exec(select(Incident).where(
                col(Incident.state).in_(store.OPEN_STATES)).order_by(col(Incident.id))).all()
        on_call: list[OnCallShift] | str | None = None
        if self.oncall is not None:
            try:
                on_call = await self.oncall.now()
            except OnCallUnavailable as exc:
                on_call = str(exc)
        return handoff_digest_text(now, during, still_open, on_call)
