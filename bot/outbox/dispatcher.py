"""The dispatcher: claims due deliveries, leases them, has them sent (`senders`) and
records their outcomes; retries, gives up, and drains on a graceful stop.

A row is marked sent only after the service accepted it; retries back off
exponentially with jitter, a 429's Retry-After is honoured for the whole service,
and a refusal that can never succeed marks the row failed (and says so on the
incident's timeline). A delivery other than a page that is still failing after the
retry budget is given up the same way; a page is retried for ever and, while it is,
announced loudly in Slack (`page_alarm`). Rows are leased while in flight, so
several replicas can run dispatchers against one PostgreSQL database without
sending twice; a lease outlives the longest possible attempt, and a crashed
holder's lease simply expires, after which any replica (or the restarted process)
takes the row. A graceful stop drains the outcomes before exiting (`drain`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from anyio import to_thread

from bot import logs, store
from bot.clock import Clock, Monotonic, utcnow
from bot.db import Database
from bot.domain.delivery import expired, given_up
from bot.domain.ratelimit import TokenBucket, backoff
from bot.metrics import Metrics
from bot.models import Delivery
from bot.outbox.page_alarm import PageAlarm, watch_pages
from bot.outbox.senders import Sender
from bot.outbox.slack_once import SlackOnce
from bot.ports import Chat, MissingScope, Notes, Pager, RetryLater, Undeliverable
from bot.runbooks import Runbook
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
CONCURRENCY = 16


@dataclass(frozen=True, slots=True)
class Backoff:
    base: float
    cap: float


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
        self.chat = chat
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
        self._slack = SlackOnce(chat)
        self._sender = Sender(db, pager=pager, chat=chat, notes=notes, runbooks=runbooks,
                              clock=clock, slack=self._slack)

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
            watchers.append(asyncio.create_task(
                watch_pages(self.db, self.alarm, clock=self.clock, wake=self._wake.set),
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
            outcome = await self._sender.send(delivery)
        except RetryLater as exc:
            outcome = self._retry(delivery, exc)
        except Undeliverable as exc:  # a page too: retrying cannot help
            if isinstance(exc, MissingScope):
                self._slack.tell_missing_scope(exc, [])  # the failure itself goes on the timeline
            outcome = Outcome(delivery, "failed", str(exc))
        except Exception as exc:  # an unknown failure must not lose the delivery
            log.exception("delivery %s raised", delivery.id)
            outcome = self._retry(delivery, RetryLater(f"unexpected {type(exc).__name__}"))
        self._outcomes.put_nowait(outcome)

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
