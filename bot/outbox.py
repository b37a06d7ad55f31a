"""The dispatcher: delivers the outbox to PagerDuty and Slack, at least once, in order.

Each delivery row was written in the same transaction as the incident change
that owed it, so a crash loses nothing: on restart the rows are still pending.
A row is marked sent only after the service accepted it; retries back off
exponentially with jitter, a 429's Retry-After is honoured for the whole
service, and a refusal that can never succeed marks the row failed (and says so
on the incident's timeline). Deliveries of one incident to one service go
strictly in order. Rows are leased while in flight, so several replicas can
run dispatchers against one PostgreSQL database without sending twice; a lease
outlives the longest possible attempt, and a crashed holder's lease simply
expires, after which any replica (or the restarted process) takes the row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from anyio import to_thread
from sqlmodel import col, select

from bot import store
from bot.clock import Clock, utcnow
from bot.db import Database
from bot.domain.messages import IncidentView, incident_message
from bot.domain.ratelimit import backoff
from bot.metrics import Metrics
from bot.models import AlertOccurrence, Delivery, Incident
from bot.ports import Chat, Pager, PostedMessage, RetryLater, Undeliverable

log = logging.getLogger(__name__)

BATCH = 50
CONCURRENCY = 8


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float
    cap: float


def incident_view(incident: Incident, occurrences: list[AlertOccurrence]) -> IncidentView:
    annotations: dict[str, str] = {}
    for occurrence in occurrences:
        annotations = {**occurrence.annotations, **annotations}
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
        alert_count=len(occurrences) or 1,
        firing=sum(1 for o in occurrences if o.status == "firing"),
        triggered_at=incident.triggered_at,
        acknowledged_by=incident.acknowledged_by,
        resolved_at=incident.resolved_at,
        resolved_by=incident.resolved_by,
        annotations=annotations,
    )


class Dispatcher:
    def __init__(self, db: Database, *, pager: Pager | None, chat: Chat | None,
                 backoff: Backoff, poll_seconds: float, lease: timedelta,
                 metrics: Metrics, clock: Clock = utcnow) -> None:
        self.db = db
        self.pager = pager
        self.chat = chat
        self.backoff = backoff
        self.poll_seconds = poll_seconds
        self.lease = lease
        self.metrics = metrics
        self.clock = clock
        self._wake = asyncio.Event()
        self._held: dict[str, float] = {}  # target → monotonic time it may be tried again
        self._slots = asyncio.Semaphore(CONCURRENCY)

    def wake(self) -> None:
        """Called after a commit that owes deliveries, so they go out without waiting a poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled. Errors of one round are logged; the next round retries."""
        while True:
            try:
                delivered = await self.deliver_due()
            except Exception:  # the database may be down; keep the loop alive
                log.exception("outbox round failed; retrying")
                delivered = 0
            if delivered == 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
                except TimeoutError:
                    pass

    def held_targets(self) -> list[str]:
        now = time.monotonic()
        return [target for target, until in self._held.items() if until > now]

    async def deliver_due(self) -> int:
        """One round: claim what is due and deliver it. Returns how many were attempted."""
        now = self.clock()
        held = self.held_targets()

        def claim() -> list[Delivery]:
            with self.db.write() as session:
                return store.claim_due(session=session, now=now, lease=self.lease, limit=BATCH,
                                       held=held)

        claimed = await to_thread.run_sync(claim)
        if claimed:
            await asyncio.gather(*(self._deliver(d) for d in claimed))
        return len(claimed)

    async def _deliver(self, delivery: Delivery) -> None:
        async with self._slots:
            try:
                if delivery.target in self.held_targets():
                    raise RetryLater("waiting out the service's rate limit",
                                     after=self._held[delivery.target] - time.monotonic())
                coalesced = await self._send(delivery)
            except RetryLater as exc:
                await self._retry(delivery, exc)
            except Undeliverable as exc:
                await self._finish(delivery, "failed", str(exc))
            except Exception as exc:  # an unknown failure must not lose the delivery
                log.exception("delivery %s raised", delivery.id)
                await self._retry(delivery, RetryLater(f"unexpected {type(exc).__name__}"))
            else:
                await self._finish(delivery, "sent", None, coalesced=coalesced)

    async def _send(self, delivery: Delivery) -> list[int]:
        """Send one delivery; returns ids of Slack syncs it also satisfied."""
        if delivery.target == "pagerduty":
            if self.pager is None:
                raise Undeliverable("PagerDuty is not configured")
            await self.pager.send(delivery.action, delivery.payload["dedup_key"],
                                  delivery.payload.get("payload"))
            return []
        if self.chat is None:
            raise Undeliverable("Slack is not configured")
        incident, occurrences, syncs = await to_thread.run_sync(self._load, delivery.incident_id)
        if delivery.action == "reply":
            if not incident.slack_ts:
                raise Undeliverable("the incident has no Slack message to reply under")
            await self.chat.post(incident.slack_channel_id or incident.channel or "",
                                 delivery.payload["text"], [], thread_ts=incident.slack_ts)
            return []
        text, blocks = incident_message(incident_view(incident, occurrences))
        if incident.slack_ts and incident.slack_channel_id:
            await self.chat.update(incident.slack_channel_id, incident.slack_ts, text, blocks)
        else:
            posted = await self.chat.post(incident.channel or "", text, blocks)
            await to_thread.run_sync(self._remember_message, delivery.incident_id, posted)
        return syncs

    def _load(self, incident_id: int) -> tuple[Incident, list[AlertOccurrence], list[int]]:
        with self.db.read() as session:
            incident = session.get(Incident, incident_id)
            if incident is None:
                raise Undeliverable(f"incident {incident_id} no longer exists")
            occurrences = list(session.exec(
                select(AlertOccurrence).where(AlertOccurrence.incident_id == incident_id)
                .order_by(col(AlertOccurrence.id))
            ).all())
            syncs = store.pending_syncs(incident_id, session=session)
            return incident, occurrences, syncs

    def _remember_message(self, incident_id: int, posted: PostedMessage) -> None:
        with self.db.write() as session:
            store.record_slack_message(incident_id, session=session,
                                       channel_id=posted.channel_id, ts=posted.ts)

    async def _retry(self, delivery: Delivery, exc: RetryLater) -> None:
        delay = exc.after if exc.after is not None else backoff(
            delivery.attempts + 1, base=self.backoff.base, cap=self.backoff.cap)
        if exc.whole_target:
            self._held[delivery.target] = max(self._held.get(delivery.target, 0.0),
                                              time.monotonic() + delay)
        log.warning("delivery %s (%s %s) will be retried in %.1fs: %s", delivery.id,
                    delivery.target, delivery.action, delay, exc)
        await self._finish(delivery, "retry", str(exc),
                           retry_at=self.clock() + timedelta(seconds=delay))

    async def _finish(self, delivery: Delivery, outcome: str, error: str | None, *,
                      coalesced: list[int] | None = None,
                      retry_at: datetime | None = None) -> None:
        now = self.clock()

        def write() -> None:
            with self.db.write() as session:
                store.finish_delivery(delivery.id, session=session, now=now,  # type: ignore[arg-type]
                                      outcome=outcome, error=error, retry_at=retry_at)
                if coalesced:
                    store.coalesce_syncs(coalesced, session=session, into=delivery.id,  # type: ignore[arg-type]
                                         now=now)
                incident = session.get(Incident, delivery.incident_id)
                if incident is not None and delivery.target == "pagerduty" and outcome == "sent":
                    store.add_timeline(incident, "paged" if delivery.action == "trigger"
                                       else f"pagerduty_{delivery.action}",
                                       f"PagerDuty {delivery.action} accepted",
                                       session=session, actor="bot", now=now)
                if incident is not None and outcome == "failed":
                    store.add_timeline(incident, "delivery_failed",
                                       f"{delivery.target} {delivery.action} refused: {error}",
                                       session=session, actor="bot", now=now)

        await to_thread.run_sync(write)
        self.metrics.delivery_outcome(delivery.target, outcome,
                                      (now - delivery.created_at).total_seconds())

