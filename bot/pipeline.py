"""The orchestrator: moves alerts through the pure core into the store and wakes delivery.

The path of an alert, each step in one module:
1. parsed: web/alerts.py checks the token and size, bot/intake/ turns the payload into
   `Alert`s (or a 422 naming each bad field); `UseCases.ingest` hands them here;
2. decided and persisted: `_commit` runs `store.apply_alerts` in one transaction:
   store/intake.py loads the facts, domain/intake.py plans (group, join, reopen,
   resolve, promote, silence; timeline entries and the deliveries owed), and
   store/intake.py writes the plan, outbox rows included;
3. sent: new pages are handed to the outbox's dispatcher (`Courier.take`), the rest
   wake it (`Courier.wake`); bot/outbox/ sends them through bot/adapters/.

Webhook requests that arrive while a commit is in progress are committed together
in the next transaction (group commit): one fsync on SQLite, one round of row
locks on PostgreSQL, however many requests are waiting. Each request still gets
its own result, and only after the transaction holding its alerts committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from anyio import to_thread
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bot import store
from bot.clock import Clock, Monotonic, utcnow
from bot.db import Database, is_transient
from bot.domain.alert import Alert
from bot.domain.incident import DeliveryPolicy
from bot.domain.ratelimit import LoadAverage
from bot.domain.routing import RoutingConfig
from bot.models import Delivery
from bot.runbooks import Runbook
from bot.store import IngestResult

log = logging.getLogger(__name__)
T = TypeVar("T")

# Two replicas may open an incident for the same group at the same moment; the
# database refuses the second (unique open_group_hash) and a retry joins the first.
_CONFLICT_RETRIES = 3
# Bounds one group commit, so a flood cannot make a single transaction huge.
_GROUP_ALERTS = 5000
# Time constant of the intake load average (seconds).
_LOAD_WINDOW = 1.0


class Courier(Protocol):
    """What intake needs of this process's dispatcher."""

    def wake(self) -> None:
        """Deliveries were just committed: look for them now rather than at the next poll."""

    def hand_over_lease(self) -> timedelta | None:
        """How long to lease the pages handed over by `take`; None while not running."""

    def take(self, deliveries: Sequence[Delivery]) -> None:
        """Send these deliveries, already leased to this process, without claiming them."""


class OnOpened(Protocol):
    def __call__(self, incident_ids: Sequence[int], *, session: Session,
                 now: datetime) -> None: ...


class Pipeline:
    def __init__(self, db: Database, *, routing: RoutingConfig, policy: DeliveryPolicy,
                 courier: Courier, on_runs: Callable[[], None], clock: Clock = utcnow,
                 monotonic: Monotonic = time.monotonic,
                 runbooks: Mapping[str, Runbook] | None = None,
                 on_opened: OnOpened | None = None) -> None:
        """`monotonic` times the load average (`load`); `on_opened` adds to the
        transaction that opened incidents (the model change each followed)."""
        self.db = db
        self.runbooks = runbooks or {}
        self.routing = routing
        self.policy = policy
        self.courier = courier
        self.on_runs = on_runs
        self.clock = clock
        self.monotonic = monotonic
        self.on_opened = on_opened
        self._waiting: list[tuple[Sequence[Alert], asyncio.Future[IngestResult]]] = []
        self._waiting_since = 0.0  # monotonic time the oldest waiting request arrived
        self._committer: asyncio.Task[None] | None = None
        self._load = LoadAverage(updated=monotonic(), window=_LOAD_WINDOW)  # replaced whole

    async def ingest(self, alerts: Sequence[Alert]) -> IngestResult:
        """Commit the alerts and what they change; returns once that is durable.

        Database errors propagate to the caller (transient ones mean: answer 503
        so that the sender retries); a failing request never fails its neighbours.
        """
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        if not self._waiting:
            self._waiting_since = self.monotonic()
        self._waiting.append((alerts, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_waiting())
        return await future

    async def _commit_waiting(self) -> None:
        while self._waiting:
            group, size, since = [], 0, self._waiting_since
            self._waiting_since = self.monotonic()  # for whatever is left behind
            while self._waiting and (not group or size + len(self._waiting[0][0]) <= _GROUP_ALERTS):
                group.append(self._waiting.pop(0))
                size += len(group[-1][0])
            await self._commit_group(group)
            self._busy(since)

    def load(self) -> float:
        """The share of the last second or so during which alerts waited or were being
        committed (0 to 1).

        Work that shares the process with intake (delivery) reads it to give way to
        intake while alerts pour in; callable from any thread."""
        return self._load.at(self.monotonic())

    def _busy(self, since: float) -> None:
        """Fold in that alerts waited or were being committed from `since` until now."""
        self._load = self._load.busy(since, self.monotonic())

    async def _commit_group(
        self, group: list[tuple[Sequence[Alert], asyncio.Future[IngestResult]]]
    ) -> None:
        hand_over = self.courier.hand_over_lease()
        try:
            results = await to_thread.run_sync(self._commit, [alerts for alerts, _ in group],
                                               hand_over)
        except Exception as exc:
            if len(group) > 1 and not is_transient(exc):  # isolate the request at fault
                for member in group:
                    await self._commit_group([member])
                return
            results = exc
        for index, (_, future) in enumerate(group):
            if future.done():  # the request was cancelled (client went away)
                continue
            if isinstance(results, Exception):
                future.set_exception(results)
            else:
                future.set_result(results[index])
        if isinstance(results, Exception):
            return
        handed = [delivery for result in results for delivery in result.handed]
        if handed:
            self.courier.take(handed)
        if any(result.deliveries > len(result.handed) for result in results):
            self.courier.wake()
        if any(result.runs for result in results):
            self.on_runs()

    async def transact(self, work: Callable[[Session, datetime], T]) -> T:
        """Run `work(session, now)` in one write transaction off the event loop, then
        wake delivery and the runbook worker for whatever it owes. Errors propagate."""
        def run() -> T:
            with self.db.write() as session:
                return work(session, self.clock())

        result = await to_thread.run_sync(run)
        self.courier.wake()
        self.on_runs()
        return result

    def _commit(self, batches: list[Sequence[Alert]],
                hand_over: timedelta | None) -> list[IngestResult]:
        for attempt in range(1, _CONFLICT_RETRIES + 1):
            try:
                with self.db.write() as session:
                    now = self.clock()
                    results = store.apply_alerts(batches, session=session, routing=self.routing,
                                                 policy=self.policy, now=now,
                                                 runbooks=self.runbooks, hand_over=hand_over)
                    opened = [i for result in results for i in result.opened]
                    if opened and self.on_opened is not None:
                        self.on_opened(opened, session=session, now=now)
                    return results
            except IntegrityError:
                if attempt == _CONFLICT_RETRIES:
                    raise
                log.info("concurrent incident change; retrying the batch (attempt %d)", attempt)
        raise AssertionError("unreachable")
