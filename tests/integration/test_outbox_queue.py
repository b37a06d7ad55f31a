"""The outbox under load: claims, hand-over of new incidents' pages, intake's load
average and the Slack trickle while intake is saturated. Real databases and the
Slack stand-in; the pipeline and the dispatcher are the bot's own, timed by a monotonic
clock the test drives (nothing here depends on how fast the machine is)."""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Sequence
from datetime import timedelta

import pytest

from bot import store
from bot.adapters.slack import SlackChat
from bot.clock import utcnow
from bot.db import Database
from bot.intake import PARSERS
from bot.metrics import Metrics, RecordSnapshot
from bot.models import Delivery
from bot.outbox import Backoff, Dispatcher
from bot.pipeline import Pipeline
from bot.routing_file import load_routing
from bot.settings import Settings
from bot.store import DeliveryPolicy
from tests.harness import wait_for

ROUTING = load_routing(Settings().oncall_config)
BOTH = DeliveryPolicy(slack=True, pagerduty=True, default_channel="#ml-alerts")


def alerts(model: str, severity: str, status: str = "firing") -> list:
    return PARSERS["generic"]({"alertname": "Drift", "model": model, "environment": "prod",
                               "severity": severity, "status": status,
                               "summary": f"{model} drifted"})


def database(url: str) -> Database:
    db = Database(url)
    db.upgrade()
    return db


def apply(db: Database, batch: list, hand_over: timedelta | None = None,
          policy: DeliveryPolicy = BOTH) -> store.IngestResult:
    with db.write() as session:
        (result,) = store.apply_alerts([batch], session=session, routing=ROUTING,
                                       policy=policy, now=utcnow(), hand_over=hand_over)
    return result


def due(db: Database, limit: int = 50, **kwargs) -> list[tuple[int | None, str, str]]:
    with db.read() as session:
        return [(d.incident_id, d.target, d.action)
                for d in store.due_deliveries(session=session, now=utcnow(), limit=limit, **kwargs)]


def test_claims_take_pages_first_in_order_per_incident_and_within_caps(database_url: str) -> None:
    db = database(database_url)
    (first,) = apply(db, alerts("churn", "warning")).opened  # L0: a Slack message
    (second,) = apply(db, alerts("fraud", "critical")).opened  # L1: a page and a Slack message
    apply(db, alerts("fraud", "critical", "resolved"))  # owes the resolve after the trigger

    assert due(db) == [(second, "pagerduty", "trigger"), (first, "slack", "sync"),
                       (second, "slack", "sync")]  # the resolve waits for its trigger
    assert due(db, caps={"slack": 1}) == [(second, "pagerduty", "trigger"), (first, "slack", "sync")]
    assert due(db, held=["slack"]) == [(second, "pagerduty", "trigger")]
    assert due(db, limit=1) == [(second, "pagerduty", "trigger")]

    with db.read() as session:
        wanted = store.due_deliveries(session=session, now=utcnow(), limit=50)
    now = utcnow()
    with db.write() as session:
        assert store.lease_deliveries(wanted, session=session, now=now,
                                      lease=timedelta(seconds=30)) == wanted
    with db.write() as session:  # another dispatcher read them too: it gets none
        assert store.lease_deliveries(wanted, session=session, now=now,
                                      lease=timedelta(seconds=30)) == []
    assert due(db) == []
    with db.write() as session:
        store.release_leases(session=session)
    assert len(due(db)) == 3
    db.dispose()


def test_a_new_incidents_page_is_written_leased_and_handed_over(database_url: str) -> None:
    db = database(database_url)
    handed = apply(db, alerts("churn", "critical"), hand_over=timedelta(seconds=30)).handed
    assert [(d.target, d.action) for d in handed] == [("pagerduty", "trigger")]
    assert handed[0].id is not None and handed[0].lease_until is not None
    assert due(db, held=["slack"]) == []  # leased to the process it was handed to
    # An incident that already paged owes its resolve the ordinary way.
    result = apply(db, alerts("churn", "critical", "resolved"), hand_over=timedelta(seconds=30))
    assert result.handed == [] and result.deliveries == 2  # resolve + Slack edit
    # Without a dispatcher to hand it to, the page is claimable at once.
    (plain,) = apply(db, alerts("fraud", "critical")).opened
    assert (plain, "pagerduty", "trigger") in due(db)
    db.dispose()


class Ticking:
    """A monotonic clock that moves only when read (`step` seconds a reading) or told."""

    def __init__(self, step: float = 0.0) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Courier:
    """This test's side of the pipeline's Courier port: records what it is given."""

    def __init__(self) -> None:
        self.wakes = 0
        self.taken: list[Delivery] = []

    def wake(self) -> None:
        self.wakes += 1

    def hand_over_lease(self) -> timedelta | None:
        return timedelta(seconds=30)

    def take(self, deliveries: Sequence[Delivery]) -> None:
        self.taken += deliveries


def test_intake_load_rises_while_alerts_pour_in_and_decays_after(database_url: str) -> None:
    db = database(database_url)
    courier = Courier()
    # Every reading is 10 ms after the previous one: time passes only as intake works.
    clock = Ticking(step=0.01)
    pipeline = Pipeline(db, routing=ROUTING, policy=BOTH, courier=courier, on_runs=lambda: None,
                        monotonic=clock)

    async def scenario() -> tuple[float, float, float]:
        idle = pipeline.load()
        await pipeline.ingest(alerts("churn", "critical"))

        async def sender(index: int) -> None:
            for round_ in range(2000):  # bounded; stops once three (ticked) seconds have passed
                await pipeline.ingest(alerts(f"m{index}-{round_ % 20}", "warning"))
                if clock.now > 3.0:
                    return

        await asyncio.gather(*(sender(i) for i in range(8)))
        busy = pipeline.load()
        clock.advance(2.5)  # and nothing arrives
        return idle, busy, pipeline.load()

    idle, busy, after = asyncio.run(scenario())
    assert idle == 0.0
    # Each commit spans two of the three readings since the one before: the load tends to 2/3.
    assert busy > 0.5, busy
    assert after == pytest.approx(busy * math.exp(-(2.5 + clock.step)))  # e^-2.5 of what it was
    assert [(d.target, d.action) for d in courier.taken] == [("pagerduty", "trigger")]
    assert courier.wakes > 0  # the Slack posts the warnings owe
    db.dispose()


def test_slack_trickles_while_intake_is_saturated_and_drains_after(database_url, slack) -> None:
    db = database(database_url)
    slack_only = DeliveryPolicy(slack=True, pagerduty=False, default_channel="#ml-alerts")
    for index in range(30):
        apply(db, alerts(f"model{index}", "warning"), policy=slack_only)
    load = {"value": 1.0}
    clock = Ticking()  # stands still until told

    def posted() -> int:
        return len(slack.top_level_messages())

    async def reach(count: int) -> None:
        await asyncio.to_thread(wait_for, lambda: posted() >= count, timeout=20, what=f"{count} posts")

    async def scenario() -> tuple[int, int, int]:
        chat = SlackChat(slack.token, base_url=slack.base_url,
                         ssl_context=ssl.create_default_context(), timeout=5)
        chat.start()
        dispatcher = Dispatcher(db, pager=None, chat=chat, notes=None, backoff=Backoff(1, 5),
                                poll_seconds=0.05, lease=timedelta(seconds=30),
                                metrics=Metrics(RecordSnapshot), runbooks={},
                                intake_load=lambda: load["value"], monotonic=clock)
        task = asyncio.create_task(dispatcher.run())
        try:
            await reach(5)  # the burst
            await asyncio.sleep(0.5)  # ten polls, none of which may post more while time stands still
            burst = posted()
            clock.advance(1.0)  # 5 a second
            await reach(10)
            await asyncio.sleep(0.5)
            a_second_later = posted()
            load["value"] = 0.0
            await reach(30)
            return burst, a_second_later, posted()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await chat.close()

    assert asyncio.run(scenario()) == (5, 10, 30)
    db.dispose()
