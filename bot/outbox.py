"""The dispatcher: delivers the outbox to PagerDuty and Slack, at least once.

Each delivery row was written in the same transaction as the incident change
that owed it, so a crash loses nothing: on restart the rows are still pending.
A row is marked sent only after the service accepted it; retries back off
exponentially with jitter, a 429's Retry-After is honoured for the whole
service, and a refusal that can never succeed marks the row failed (and says so
on the incident's timeline). A delivery other than a page that is still failing
after the retry budget is given up the same way; a page is retried for ever and,
while it is, announced loudly in Slack (`domain.delivery`). Order is kept only
where it matters (a trigger before its resolve, a Slack post before its updates
and replies), so a stuck row holds back nothing else. Rows are leased while in
flight, so several replicas can run dispatchers against one PostgreSQL database
without sending twice; a lease outlives the longest possible attempt, and a
crashed holder's lease simply expires, after which any replica (or the restarted
process) takes the row.

A send that may have reached the service unrecorded is sent again: harmless for a
page (its dedup_key), while a Slack post is first looked for by the metadata it was
posted with and adopted when found (`_post_once`), so that each incident has one
message. A chart is shared after looking for it the same way, by its file name (`_upload_once`).
A graceful stop drains the outcomes before exiting (`drain`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from anyio import to_thread
from sqlmodel import col, select

from bot import logs, store
from bot.charts import ChartsUnavailable, render_png
from bot.clock import Clock, Monotonic, utcnow
from bot.db import Database
from bot.domain.charts import series_from_json
from bot.domain.confirmations import answer_through_response_url
from bot.domain.delivery import (
    PAGE_ALERT_REPEAT,
    Mark,
    expired,
    given_up,
    incident_mark,
    loud_channels,
    loud_message,
    notice_mark,
    reply_mark,
    run_mark,
    search_from,
)
from bot.domain.messages import (
    IncidentView,
    Mrkdwn,
    RunStepView,
    RunView,
    cut,
    incident_message,
    md,
    run_message,
)
from bot.domain.ratelimit import TokenBucket, backoff
from bot.metrics import Metrics
from bot.models import Delivery, Incident, RunbookRun, StepResult
from bot.ports import (
    Chat,
    MissingScope,
    Notes,
    NotInChannel,
    Pager,
    PostedMessage,
    RetryLater,
    Undeliverable,
)
from bot.runbooks import Runbook
from bot.runs import rollback_runbook, summary
from bot.store import Outcome
from bot.worker_loop import claim_and_run

log = logging.getLogger(__name__)

BATCH = 50
# While intake is saturated (its load above _SATURATED), Slack deliveries trickle
# out at this rate so that accepting alerts keeps the CPU and the database writer;
# pages are never held back. Slack itself takes about one message a second per
# channel, so in an alert storm it would hold messages back anyway.
_SATURATED = 0.5
_TRICKLE_PER_MINUTE = 300
_TRICKLE_BURST = 5
RUN_TITLES = {"diagnostics": "Diagnostics", "rollback": "Rollback", "manual": "Runbook run"}
CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float
    cap: float


@dataclass(frozen=True, slots=True)
class PageAlarm:
    """When and how an undelivered page is announced in Slack."""

    after: timedelta  # undelivered this long: announced
    mention: Mrkdwn  # <!here> or <!subteam^S…>, from parse_mention
    default_channel: str  # for a page whose incident names no channel

    @property
    def check_seconds(self) -> float:
        """How often the outbox looks for overdue pages: the alarm comes at most this
        late, and the look is one read of the pending pages' index."""
        return min(self.after.total_seconds() / 10, 15.0)


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


class Dispatcher:
    """Claims due deliveries continuously (up to CONCURRENCY in flight) and records
    their outcomes in batches: one transaction for all that finished meanwhile."""

    def __init__(self, db: Database, *, pager: Pager | None, chat: Chat | None,
                 notes: Notes | None, backoff: Backoff, poll_seconds: float, lease: timedelta,
                 metrics: Metrics, runbooks: Mapping[str, Runbook],
                 budget: timedelta = timedelta(hours=24), alarm: PageAlarm | None = None,
                 clock: Clock = utcnow, intake_load: Callable[[], float] = lambda: 0.0,
                 monotonic: Monotonic = time.monotonic) -> None:
        """`budget`: how long a delivery other than a page is retried before it is given
        up. `alarm`: announce undelivered pages in Slack (None: they are only counted)."""
        self.db = db
        self.budget = budget
        self.alarm = alarm
        self.pager = pager
        self.chat = chat
        self.notes = notes
        self.runbooks = runbooks
        self.backoff = backoff
        self.poll_seconds = poll_seconds
        self.lease = lease
        self.metrics = metrics
        self.clock = clock
        self.intake_load = intake_load
        self.monotonic = monotonic  # times the Slack trickle and targets held after a 429
        self._trickle = TokenBucket(_TRICKLE_PER_MINUTE, monotonic(), burst=_TRICKLE_BURST)
        self._wake = asyncio.Event()
        self._held: dict[str, float] = {}  # target → monotonic time it may be tried again
        self._in_flight: set[asyncio.Task[None]] = set()
        self._outcomes: asyncio.Queue[Outcome] = asyncio.Queue()
        self._running = False
        self._draining = False
        self._stopped = False
        self._joined: set[str] = set()  # Slack channel IDs joined (or tried) by this process
        self._told: set[tuple[str, str]] = set()  # Slack setup problems already said

    def wake(self) -> None:
        """Called after a commit that owes deliveries, so they go out without waiting a poll."""
        self._wake.set()

    def hand_over_lease(self) -> timedelta | None:
        return self.lease if self._running and not self._draining else None

    def take(self, deliveries: Sequence[Delivery]) -> None:
        """Send deliveries leased to this process in the transaction that owed them."""
        for delivery in deliveries:
            task = asyncio.create_task(self._deliver(delivery))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def run(self) -> None:
        """Deliver until cancelled."""
        if self.db.is_sqlite:
            # One process runs the bot on SQLite: a lease found at start was left by
            # a process that is gone, and its deliveries need not wait it out.
            await to_thread.run_sync(self._release_leases)
        recorder = asyncio.create_task(self._record_outcomes(), name="outbox-recorder")
        watchers = [recorder]
        if self.alarm is not None and self.chat is not None:
            watchers.append(asyncio.create_task(self._watch_pages(self.alarm),
                                                name="outbox-page-alarm"))
        self._running = True
        try:
            await claim_and_run(claim=self._claim, handle=self._deliver, in_flight=self._in_flight,
                                concurrency=CONCURRENCY, wake=self._wake,
                                poll_seconds=self.poll_seconds, what="deliveries",
                                stopped=lambda: self._stopped)
        finally:
            self._running = False
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    async def drain(self, timeout: float) -> None:
        """Before a graceful stop (SIGTERM): claim nothing more, let the sends in flight
        finish and record every outcome, for at most `timeout` seconds. Without it the
        outcomes still queued are lost and those sends go out again after the restart;
        a send still unfinished at the deadline is looked for in Slack before it is
        posted again (its row keeps its first attempt's time)."""
        self._draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=timeout)
        try:
            await asyncio.wait_for(self._outcomes.join(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            log.warning("stopping with %d delivery outcomes unrecorded", self._outcomes.qsize())
        else:
            log.info("delivery outcomes recorded; %d sends unfinished", len(self._in_flight))
        self._stopped = True  # the claim loop ends, cancelling what is still unfinished
        self._wake.set()

    def _release_leases(self) -> None:
        with self.db.write() as session:
            store.release_leases(session=session)

    def held_targets(self) -> list[str]:
        now = self.monotonic()
        return [target for target, until in self._held.items() if until > now]

    def _claim(self, limit: int) -> list[Delivery]:
        if self._draining:
            return []
        held, now = self.held_targets(), self.clock()
        saturated = self.intake_load() > _SATURATED
        caps = {"slack": self._trickle.available(self.monotonic())} if saturated else None
        with self.db.read() as session:
            due = store.due_deliveries(session=session, now=now, limit=min(limit, BATCH),
                                       held=held, caps=caps)
        if not due:
            return []
        with self.db.write_one() as session:  # one UPDATE … RETURNING
            claimed = store.lease_deliveries(due, session=session, now=now, lease=self.lease)
        if saturated:
            for delivery in claimed:
                if delivery.target == "slack":
                    self._trickle.take(self.monotonic())
        return claimed

    async def _deliver(self, delivery: Delivery) -> None:
        logs.delivery_id.set(delivery.id)  # each delivery runs in a task of its own
        logs.incident_id.set(delivery.incident_id)
        try:
            if delivery.target in self.held_targets():
                raise RetryLater("waiting out the service's rate limit",
                                 after=self._held[delivery.target] - self.monotonic(),
                                 whole_target=True)
            outcome = await self._send(delivery)
        except RetryLater as exc:
            outcome = self._retry(delivery, exc)
        except Undeliverable as exc:  # a page too: retrying cannot help
            if isinstance(exc, MissingScope):
                self._tell_missing_scope(exc, [])  # the failure itself goes on the timeline
            outcome = Outcome(delivery, "failed", str(exc))
        except Exception as exc:  # an unknown failure must not lose the delivery
            log.exception("delivery %s raised", delivery.id)
            outcome = self._retry(delivery, RetryLater(f"unexpected {type(exc).__name__}"))
        self._outcomes.put_nowait(outcome)

    async def _send(self, delivery: Delivery) -> Outcome:
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
            await self._post_once(delivery.payload["channel"], delivery.payload["text"],
                                  delivery.payload.get("blocks") or [],
                                  notice_mark(delivery.id),  # type: ignore[arg-type]
                                  since=since, notes=notes)
            if delivery.payload.get("chart"):  # after its post: the chart goes below it
                try:
                    await self._upload_once(delivery.payload["channel"],
                                            delivery.payload["chart"], since=since, notes=notes)
                except Undeliverable as exc:  # the post went out: it is not failed for this
                    log.error("delivery %s: the chart was not shared: %s", delivery.id, exc)
            return Outcome(delivery, "sent", notes=notes)
        if delivery.action == "upload":
            await self._upload_once(delivery.payload["channel"], delivery.payload["chart"],
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
            await self._post_once(incident.slack_channel_id or incident.channel or "",
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
        posted = await self._post_once(incident.channel or "", text, blocks,
                                       incident_mark(incident.id, delivery.id),  # type: ignore[arg-type]
                                       since=min(filter(None, (since, search_from(earlier))),
                                                 default=None), notes=notes)
        return Outcome(delivery, "sent", coalesced=syncs, posted=(posted.channel_id, posted.ts),
                       notes=notes)

    async def _post_once(self, channel: str, text: str, blocks: list[dict[str, Any]],
                         mark: Mark, *, since: datetime | None, notes: list[str],
                         thread_ts: str | None = None) -> PostedMessage:
        """Post a message, unless an earlier attempt whose answer was lost posted it
        already: then adopt that message, brought up to date (`domain.delivery`).
        `since`: where to look from (None: no earlier attempt, just post).

        A search Slack cannot answer for now (5xx, 429) retries the delivery; one it can
        never answer (a scope missing, a private channel the bot is not in) is said once
        in `notes` and the log, and the message is posted regardless: a possible second
        copy rather than none."""
        assert self.chat is not None
        if since is not None:
            found = await self._search(channel, mark, since, thread_ts, notes)
            if found is not None:
                log.info("%s message %s already in Slack (%s %s): adopted", mark.event_type,
                         dict(mark.payload), found.channel_id, found.ts)
                if blocks:  # it shows the state of its first attempt
                    await self.chat.update(found.channel_id, found.ts, text, blocks)
                return found
        try:
            posted = await self.chat.post(channel, text, blocks, thread_ts=thread_ts, mark=mark)
        except NotInChannel as exc:
            self._tell_once(("invite", channel), f"Slack: the bot cannot post in {channel} "
                            f"({exc}): invite it to the channel (/invite @oncall-bot); a "
                            "private channel needs an invite", notes=[])
            raise Undeliverable(f"{exc}: the bot is not in {channel}; invite it "
                                "(/invite @oncall-bot)") from None
        if thread_ts is None and posted.channel_id not in self._joined:
            await self._join(posted.channel_id, channel, notes)
        return posted

    async def _upload_once(self, channel: str, chart: dict[str, Any], *,
                           since: datetime | None, notes: list[str]) -> None:
        """Draw a chart (`domain.charts` series) and share it, unless an earlier attempt
        already did: its file name is unique to the delivery and looked for in the
        channel's history first. Where the search cannot be made, the chart may be
        shared twice (at least once); see `_post_once`."""
        assert self.chat is not None
        if since is not None:
            try:
                if await self.chat.find_upload(channel, chart["filename"], since=since):
                    log.info("chart %s already shared in %s: not uploaded again",
                             chart["filename"], channel)
                    return
            except MissingScope as exc:
                self._tell_missing_scope(exc, notes)
            except NotInChannel:
                pass  # not a member yet, so it shared nothing there
        try:
            content = await to_thread.run_sync(lambda: render_png(
                series_from_json(chart["series"]), title=chart["title"]))
        except (ChartsUnavailable, ValueError) as exc:
            raise Undeliverable(f"the chart cannot be drawn: {exc}") from None
        try:
            await self.chat.upload(channel, chart["filename"], chart["title"], content,
                                   comment=chart.get("comment") or "")
        except MissingScope as exc:
            self._tell_missing_scope(exc, notes)
            raise

    async def _search(self, channel: str, mark: Mark, since: datetime, thread_ts: str | None,
                      notes: list[str]) -> PostedMessage | None:
        """The message, if found; None also when the search cannot be made (said once)."""
        assert self.chat is not None
        for attempt in (1, 2):
            try:
                return await self.chat.find(channel, mark, since=since, thread_ts=thread_ts)
            except MissingScope as exc:
                self._tell_missing_scope(exc, notes)
                return None
            except NotInChannel as exc:  # join a public channel, then look again
                if attempt == 2 or exc.channel_id is None or not await self._join(
                        exc.channel_id, channel, notes):
                    self._tell_once(("invite", channel), f"Slack: the bot cannot read {channel} "
                                    "to look for a message it may have posted: invite it to the "
                                    "channel (/invite @oncall-bot)", notes=notes)
                    return None
        return None

    async def _join(self, channel_id: str, channel: str, notes: list[str]) -> bool:
        """Join a public channel once per process, so that its history can be read;
        False when the bot could not (not said again: the post worked)."""
        assert self.chat is not None
        self._joined.add(channel_id)
        try:
            return await self.chat.join(channel_id)
        except MissingScope as exc:
            self._tell_missing_scope(exc, notes)
        except (RetryLater, Undeliverable) as exc:
            log.warning("could not join Slack channel %s: %s", channel, exc)
            self._joined.discard(channel_id)  # try again with the next post
        return False

    def _tell_missing_scope(self, exc: MissingScope, notes: list[str]) -> None:
        self._tell_once(("scope", exc.scope), f"Slack: the app lacks the {exc.scope} scope; "
                        "add it (see slack-app-manifest.yml) and reinstall the app", notes=notes)

    def _tell_once(self, key: tuple[str, str], text: str, *, notes: list[str]) -> None:
        """Say a Slack setup problem once per process: in the log, and in `notes` for the
        timeline of the incident at hand."""
        if key in self._told:
            return
        self._told.add(key)
        log.error("%s", text)
        notes.append(text)

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
        posted = await self._post_once(
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

    def _retry(self, delivery: Delivery, exc: RetryLater) -> Outcome:
        now = self.clock()
        if expired(delivery.target, delivery.created_at, now, self.budget):
            log.warning("delivery %s (%s %s) given up after %s: %s", delivery.id,
                        delivery.target, delivery.action, self.budget, exc)
            return Outcome(delivery, "expired",
                           given_up(delivery.target, delivery.action, self.budget, str(exc)))
        delay = exc.after if exc.after is not None else backoff(
            delivery.attempts + 1, base=self.backoff.base, cap=self.backoff.cap)
        if exc.whole_target:
            self._held[delivery.target] = max(self._held.get(delivery.target, 0.0),
                                              self.monotonic() + delay)
        log.warning("delivery %s (%s %s) will be retried in %.1fs: %s", delivery.id,
                    delivery.target, delivery.action, delay, exc)
        # Refused as a whole (429, or held back here): this attempt posted nothing.
        return Outcome(delivery, "retry", str(exc), retry_at=now + timedelta(seconds=delay),
                       unsent=exc.whole_target)

    async def _record_outcomes(self) -> None:
        """Write outcomes in batches; keeps trying while the database is down, since a
        sent delivery that is not recorded as such would be sent again."""
        while True:
            batch = [await self._outcomes.get()]
            while not self._outcomes.empty():
                batch.append(self._outcomes.get_nowait())
            while True:
                try:
                    await to_thread.run_sync(self._write_outcomes, batch)
                    break
                except Exception:
                    log.exception("could not record %d delivery outcomes; retrying", len(batch))
                    await asyncio.sleep(self.poll_seconds)
            now = self.clock()
            for item in batch:
                self.metrics.delivery_outcome(item.delivery.target, item.outcome,
                                              (now - item.delivery.created_at).total_seconds())
                self._outcomes.task_done()
            self._wake.set()  # the next delivery in line for these incidents is due now

    def _write_outcomes(self, batch: list[Outcome]) -> None:
        with self.db.write() as session:
            store.record_outcomes(batch, session=session, now=self.clock(),
                                  notify=self.chat is not None)

    async def _watch_pages(self, alarm: PageAlarm) -> None:
        """Announce overdue pages until cancelled. Read from the outbox rows, so it
        works while PagerDuty is down and across restarts; each announcement is
        recorded on the rows, so replicas do not announce one twice."""
        while True:
            try:
                if await to_thread.run_sync(self._announce_overdue_pages, alarm):
                    self._wake.set()
            except Exception:
                log.exception("could not check for undelivered pages; retrying")
            await asyncio.sleep(alarm.check_seconds)

    def _announce_overdue_pages(self, alarm: PageAlarm) -> bool:
        now = self.clock()
        with self.db.read() as session:
            pages = store.pending_pages(session=session, since=now - alarm.after,
                                        default_channel=alarm.default_channel)
        owed = loud_channels(pages, now, after=alarm.after)
        if not owed:
            return False
        announced = False
        with self.db.write() as session:
            for channel, listed in owed.items():
                text = loud_message(listed, now, mention=alarm.mention)
                if store.announce_pages(channel, listed, text, session=session, now=now,
                                        repeat=PAGE_ALERT_REPEAT):
                    log.error("%d page(s) not taken by PagerDuty; announced in %s",
                              len(listed), channel)
                    announced = True
        return announced
