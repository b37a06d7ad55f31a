"""What the timers do when they fire, and which timers should exist.

Firing is idempotent: the incident row is locked and the timeline says whether the
timer was already acted on (see actions.fire_timer); channel posts (the shift
handoff, the weekly scorecard, a silence that ended) go through the outbox.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from anyio import to_thread
from sqlalchemy import text
from sqlmodel import Session, col, select

from bot import charts, store
from bot.domain.answers import handoff_digest_text, silence_ended_text
from bot.domain.escalation import TimerKind, timers_for
from bot.domain.messages import LONG_MESSAGE_TEXT, Mrkdwn, cut, md
from bot.models import Delivery, Incident, Silence
from bot.ports import OnCallShift, OnCallUnavailable
from bot.reports import chart_upload, scorecard_for, weekly_post
from bot.usecases.actions import clocks_of, fire_timer
from bot.usecases.base import Base
from bot.usecases.pulse import open_pulse

# Job id → (kind, subject id, due time).
Wanted = dict[str, tuple[str, int, datetime]]


class TimerCases(Base):
    async def fire_timer(self, kind: str, subject_id: int) -> str:
        """Act on the timer `kind` (a TimerKind, "handoff", "weekly_report" or
        "silence_end") for incident or silence `subject_id`; returns what was done."""
        if kind == "handoff":
            text_ = await self.handoff_digest()
            channel = self.routing.handoff.channel if self.routing.handoff else None
            await self.pipeline.transact(lambda session, now: self._post(
                session, now, channel, text_))
            return "handoff posted"
        if kind == "weekly_report":
            await to_thread.run_sync(charts.available)  # matplotlib loads outside the transaction
            await self.pipeline.transact(self._weekly_report)
            return "weekly report posted"
        if kind == "silence_end":
            await self.pipeline.transact(lambda session, now: self._silence_ended(
                session, now, subject_id))
            return "silence end acted on"
        return await self.pipeline.transact(lambda session, now: fire_timer(
            TimerKind(kind), subject_id, routing=self.routing, session=session,
            policy=self.policy, now=now))

    def timers_wanted(self, now: datetime) -> Wanted:
        """Every timer that should exist now: the open incidents' and the silences' ends."""
        wanted: Wanted = {}
        with self.db.read() as session:
            # The columns clocks_of reads, not whole incidents: a storm leaves thousands open.
            incidents = session.exec(select(
                Incident.id, Incident.tier, Incident.state, Incident.silence_id,
                Incident.triggered_at, Incident.acknowledged_at,
            ).where(col(Incident.state).in_(store.OPEN_STATES))).all()
            for clock in clocks_of(incidents, session=session):  # type: ignore[arg-type]
                for timer in timers_for(clock, self.routing.escalation):
                    wanted[f"timer:{timer.job_id}"] = (timer.kind.value, timer.incident_id,
                                                       timer.due_at)
            for silence in session.exec(select(Silence).where(Silence.ends_at > now)).all():
                wanted[f"silence_end:{silence.id}"] = ("silence_end", silence.id,  # type: ignore[assignment]
                                                       silence.ends_at)
        return wanted

    def timers_scheduled(self, jobs_table: str) -> dict[str, float | None]:
        """Job id → next run (epoch seconds) in the scheduler's job store, read from its
        table without unpickling every job."""
        with self.db.read() as session:
            return dict(session.exec(  # type: ignore[call-overload]
                text(f"SELECT id, next_run_time FROM {jobs_table}")).all())

    async def handoff_digest(self) -> Mrkdwn:
        now = self.now()
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

    async def open_pulse(self, key: str) -> str:
        """Post the satisfaction pulse of the cron occurrence `key`, once however often
        its job fires; returns what was done."""
        schedule = self.routing.pulse
        if schedule is None:
            return "no pulse configured"
        opened = await self.pipeline.transact(lambda session, now: open_pulse(
            key, schedule.channel or self.policy.default_channel, session=session, now=now,
            policy=self.policy))
        return (f"opened #{opened}" if opened
                else "not opened (opened already, or Slack is not configured)")

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
