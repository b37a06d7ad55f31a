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
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from anyio import to_thread
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from bot.domain.escalation import TimerKind
from bot.domain.messages import Mrkdwn
from bot.domain.routing import ChannelSchedule, RoutingConfig
from bot.usecases import UseCases

log = logging.getLogger(__name__)
# APScheduler logs every job added, paused-for and run at INFO: hundreds of lines in an
# alert storm, saying less than the incidents' timelines do.
logging.getLogger("apscheduler").setLevel(logging.WARNING)

LEADER_LOCK = 7305_0002
# The lock connection's name in pg_stat_activity.
LEADER_APPLICATION_NAME = "oncall-bot timer leader"
# Seconds between two job store writes of a reconcile: a burst of them (hundreds of
# new incidents in a storm) would otherwise keep the database's write lock and the
# GIL from intake, whose commits wait out SQLite's busy handler behind it.
_JOBS_TABLE = "apscheduler_jobs"
_PACE = 0.002
# Intake load (Pipeline.load) above which a reconcile adds only the timers due within
# _STORM_HORIZON.
_STORM_LOAD = 0.5
_STORM_HORIZON = timedelta(minutes=2)
_INCIDENT_TIMERS = frozenset(kind.value for kind in TimerKind)
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
    if not await to_thread.run_sync(active.leader.still_leading):
        # The job is gone from the store; whoever leads next re-adds it (reconcile).
        log.warning("timer %s for %s not fired: this process no longer holds the "
                    "timer leader lock", kind, subject_id)
        return
    await active.fire(kind, subject_id)


class Leader(Protocol):
    """What the timers need of the leader lock (bot.store.leader.LeaderLock)."""

    def try_lead(self) -> bool: ...

    def still_leading(self) -> bool: ...

    def release(self) -> None: ...


class TimerService:
    def __init__(self, usecases: UseCases, *, leader: Leader, jobstore_engine: Callable[[], Any],
                 routing: RoutingConfig, reconcile_seconds: float) -> None:
        """`jobstore_engine` makes the SQLAlchemy engine APScheduler keeps its jobs with."""
        self.usecases = usecases
        self.leader = leader
        self.jobstore_engine = jobstore_engine
        self.routing = routing
        self.reconcile_seconds = reconcile_seconds
        self.scheduler: AsyncIOScheduler | None = None

    async def run(self) -> None:
        """Until cancelled: lead when possible, and while leading, reconcile timers."""
        global _active
        try:
            while True:
                try:
                    leading = await to_thread.run_sync(self.leader.try_lead)
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
            self.leader.release()

    def _start_scheduler(self) -> None:
        scheduler = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.jobstore_engine(),
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

    def reconcile(self) -> None:
        scheduler = self.scheduler
        if scheduler is None:
            return
        now = self.usecases.now()
        wanted = self.usecases.timers_wanted(now)
        existing = self.usecases.timers_scheduled(_JOBS_TABLE)
        for name, _ in self._schedules():
            existing.pop(name, None)
        stale = existing.keys() - wanted.keys()
        changed = [(job_id, kind, subject, due_at)
                   for job_id, (kind, subject, due_at) in wanted.items()
                   if job_id not in existing or existing[job_id] is None
                   or abs(existing[job_id] - due_at.timestamp()) > 0.001]
        if self.usecases.load() > _STORM_LOAD:
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
        if kind == "pulse":
            if self.routing.pulse is not None:
                # The occurrence names the pulse, so a job fired twice (a takeover) opens one.
                key = f"{occurrence(self.routing.pulse, self.usecases.now()):%Y-%m-%dT%H:%M%z}"
                log.info("pulse %s: %s", key, await self.usecases.open_pulse(key))
            return
        outcome = await self.usecases.fire_timer(kind, subject_id)
        if kind in _INCIDENT_TIMERS:
            log.info("timer %s for incident %s: %s", kind, subject_id, outcome)

    async def handoff_digest(self) -> Mrkdwn:
        """The shift handoff post as it would be now."""
        return await self.usecases.handoff_digest()
