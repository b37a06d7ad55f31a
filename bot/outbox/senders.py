"""The senders: one delivery, sent through the port its target names (Pager, Notes,
Chat), by its action: a page, a PagerDuty note, a channel post (with its chart), a
chart upload, an answer to whoever asked for a run, a run's thread reply, a thread
reply, or the incident's message posted or brought up to date.

Each reads what it sends from the database when it sends it (background work passes
ids), so a message shows the incident as it is now, not as it was when owed. Failures
are raised as the ports raise them (`RetryLater`, `Undeliverable`); the dispatcher
decides what they mean for the row.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from anyio import to_thread
from sqlmodel import col, select

from bot import store
from bot.clock import Clock
from bot.db import Database
from bot.domain.confirmations import answer_through_response_url
from bot.domain.delivery import incident_mark, notice_mark, reply_mark, run_mark, search_from
from bot.domain.messages import (
    IncidentView,
    RunStepView,
    RunView,
    cut,
    incident_message,
    md,
    run_message,
)
from bot.models import Delivery, Incident, RunbookRun, StepResult
from bot.outbox.slack_once import SlackOnce
from bot.ports import Chat, Notes, Pager, Undeliverable
from bot.runbooks import Runbook
from bot.runs import rollback_runbook, summary
from bot.store import Outcome

log = logging.getLogger(__name__)

RUN_TITLES = {"diagnostics": "Diagnostics", "rollback": "Rollback", "manual": "Runbook run"}


def incident_view(incident: Incident, alerts: store.AlertSummary, *,
                  can_roll_back: bool = False) -> IncidentView:
    annotations = alerts.annotations
    return IncidentView(
        id=incident.id,  # type: ignore[arg-type]
        title=incident.title,
        state=incident.state,
        tier=incident.tier,
        route=incident.route,
        model=incident.model,
        version=incident.version,
        environment=incident.environment,
        severity=incident.severity,
        team=incident.team,
        description=annotations.get("description"),
        alert_count=alerts.total or 1,
        firing=alerts.firing,
        triggered_at=incident.triggered_at,
        acknowledged_by=incident.acknowledged_by,
        resolved_at=incident.resolved_at,
        resolved_by=incident.resolved_by,
        escalated_team=incident.escalated_team,
        can_roll_back=can_roll_back,
        annotations=annotations,
        change_note=alerts.change_note,
    )


class Sender:
    """Sends one delivery and says how it went (an `Outcome` other than a retry)."""

    def __init__(self, db: Database, *, pager: Pager | None, chat: Chat | None,
                 notes: Notes | None, runbooks: Mapping[str, Runbook], clock: Clock,
                 slack: SlackOnce) -> None:
        self.db = db
        self.pager = pager
        self.chat = chat
        self.notes = notes
        self.runbooks = runbooks
        self.clock = clock
        self.slack = slack

    async def send(self, delivery: Delivery) -> Outcome:
        if delivery.target == "pagerduty":
            if self.pager is None:
                raise Undeliverable("PagerDuty is not configured")
            await self.pager.send(delivery.action, delivery.payload["dedup_key"],
                                  delivery.payload.get("payload"),
                                  routing_key_env=delivery.payload.get("routing_key_env"))
            return Outcome(delivery, "sent")
        if delivery.target == "pagerduty_rest":
            if self.notes is None:
                raise Undeliverable("PagerDuty's REST API is not configured")
            await self.notes.add_note(delivery.payload["incident_key"],
                                      delivery.payload["content"])
            return Outcome(delivery, "sent")
        if self.chat is None:
            raise Undeliverable("Slack is not configured")
        notes: list[str] = []
        if delivery.action == "post":  # a channel message that belongs to no incident
            since = search_from(delivery.first_attempt_at)
            await self.slack.post(delivery.payload["channel"], delivery.payload["text"],
                                  delivery.payload.get("blocks") or [],
                                  notice_mark(delivery.id),  # type: ignore[arg-type]
                                  since=since, notes=notes)
            if delivery.payload.get("chart"):  # after its post: the chart goes below it
                try:
                    await self.slack.upload(delivery.payload["channel"],
                                            delivery.payload["chart"], since=since, notes=notes)
                except Undeliverable as exc:  # the post went out: it is not failed for this
                    log.error("delivery %s: the chart was not shared: %s", delivery.id, exc)
            return Outcome(delivery, "sent", notes=notes)
        if delivery.action == "upload":
            await self.slack.upload(delivery.payload["channel"], delivery.payload["chart"],
                                    since=search_from(delivery.first_attempt_at), notes=notes)
            return Outcome(delivery, "sent", notes=notes)
        if delivery.action == "answer":
            await self._answer_run(delivery.payload["run_id"])
            return Outcome(delivery, "sent")
        incident, alerts, syncs = await to_thread.run_sync(self._load, delivery.incident_id)
        since = search_from(delivery.first_attempt_at)
        if delivery.action == "run_sync":
            return await self._send_run(delivery, incident)
        if delivery.action == "reply":
            if not incident.slack_ts:
                raise Undeliverable("the incident has no Slack message to reply under")
            await self.slack.post(incident.slack_channel_id or incident.channel or "",
                                  delivery.payload["text"], [],
                                  reply_mark(incident.id, delivery.id),  # type: ignore[arg-type]
                                  since=since, notes=notes, thread_ts=incident.slack_ts)
            return Outcome(delivery, "sent", notes=notes)
        rollback = bool(incident.model) and rollback_runbook(
            self.runbooks, {**incident.labels, "model": incident.model or ""}) is not None
        text, blocks = incident_message(incident_view(incident, alerts, can_roll_back=rollback))
        if incident.slack_ts and incident.slack_channel_id:
            await self.chat.update(incident.slack_channel_id, incident.slack_ts, text, blocks)
            return Outcome(delivery, "sent", coalesced=syncs)
        # Any earlier attempt to post this incident's message counts: one given up, or
        # refused, may still have left a message (an update of it then becomes this post).
        earlier = await to_thread.run_sync(self._earlier_post, delivery)
        posted = await self.slack.post(incident.channel or "", text, blocks,
                                       incident_mark(incident.id, delivery.id),  # type: ignore[arg-type]
                                       since=min(filter(None, (since, search_from(earlier))),
                                                 default=None), notes=notes)
        return Outcome(delivery, "sent", coalesced=syncs, posted=(posted.channel_id, posted.ts),
                       notes=notes)

    async def _send_run(self, delivery: Delivery, incident: Incident) -> Outcome:
        """Post, then keep editing, the thread reply that shows a runbook run."""
        if not incident.slack_ts:
            raise Undeliverable("the incident has no Slack message to reply under")
        record, steps, syncs = await to_thread.run_sync(self._load_run,
                                                        delivery.payload["run_id"])
        text, blocks = run_message(RunView(
            title=RUN_TITLES.get(record.purpose, "Runbook run"), runbook=record.runbook,
            status=record.status,
            total=len(self.runbooks[record.runbook].steps) if record.runbook in self.runbooks
            else len(steps),
            steps=[RunStepView(s.name, s.status, s.duration_s, s.output) for s in steps]))
        channel = incident.slack_channel_id or incident.channel or ""
        if record.slack_ts:
            await self.chat.update(channel, record.slack_ts, text, blocks)  # type: ignore[union-attr]
            return Outcome(delivery, "sent", coalesced=syncs)
        notes: list[str] = []
        posted = await self.slack.post(
            channel, text, blocks,
            run_mark(incident.id, record.id, delivery.id),  # type: ignore[arg-type]
            since=search_from(delivery.first_attempt_at), notes=notes,
            thread_ts=incident.slack_ts)
        return Outcome(delivery, "sent", coalesced=syncs, run_posted=(record.id, posted.ts),
                       notes=notes)

    async def _answer_run(self, run_id: int) -> None:
        """A run's result, to whoever asked for it from Slack: through the request's
        response_url while Slack takes it there, else as an ephemeral message."""
        record, steps, _ = await to_thread.run_sync(self._load_run, run_id)
        text = md("```\n{}\n```", cut(summary(record.runbook, record.status, steps), 3800))
        if record.answer_url and answer_through_response_url(record.created_at, self.clock()):
            try:
                await self.chat.respond(record.answer_url, text)  # type: ignore[union-attr]
                return
            except Undeliverable as exc:
                if not record.answer_channel:
                    raise
                log.info("run %s: response_url refused (%s); answering ephemerally", run_id, exc)
        if not record.answer_channel:
            raise Undeliverable("the response_url has expired and no channel was recorded")
        await self.chat.post_ephemeral(  # type: ignore[union-attr]
            record.answer_channel, record.requested_by.removeprefix("slack:"), text)

    def _load_run(self, run_id: int) -> tuple[RunbookRun, list[StepResult], list[int]]:
        with self.db.read() as session:
            incident_id = session.exec(select(RunbookRun.incident_id).where(
                RunbookRun.id == run_id)).first()
            pending = session.exec(select(Delivery.id, Delivery.payload).where(
                Delivery.incident_id == incident_id, Delivery.action == "run_sync",
                Delivery.state == "pending")).all()
            record = session.get(RunbookRun, run_id)  # read after the owed syncs, as in _load
            if record is None:
                raise Undeliverable(f"runbook run {run_id} no longer exists")
            steps = list(session.exec(select(StepResult).where(StepResult.run_id == run_id)
                                      .order_by(col(StepResult.position))).all())
            return record, steps, [i for i, p in pending if p.get("run_id") == run_id]

    def _earlier_post(self, delivery: Delivery) -> datetime | None:
        with self.db.read() as session:
            return store.earlier_post_attempt(delivery.incident_id, delivery.id,  # type: ignore[arg-type]
                                              session=session)

    def _load(self, incident_id: int) -> tuple[Incident, store.AlertSummary, list[int]]:
        with self.db.read() as session:
            found = store.incident_for_message(incident_id, session=session)
        if found is None:
            raise Undeliverable(f"incident {incident_id} no longer exists")
        return found
