"""Shared fixtures: databases (SQLite always, PostgreSQL when TEST_DATABASE_URL is set),
the Slack and PagerDuty stand-ins, and the bot itself as a real `oncall-bot serve` process."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.harness import BotProcess
from tests.standins.canary import CanaryServer
from tests.standins.pagerduty import PagerDutyStandIn
from tests.standins.slack import SlackStandIn
from tests.standins.tls import TestCA

ROUTING_KEY = "R0UT1NGKEY0123456789ABCDEFGHIJKL"  # 32 characters, like a real integration key
WEBHOOK_TOKEN = "alert-webhook-token-for-tests"
PG_URL = os.environ.get("TEST_DATABASE_URL")


def _backends() -> list[str]:
    return ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


@pytest.fixture(params=_backends())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for one test: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'oncall.db'}"
        return
    server = make_url(PG_URL)
    name = f"oncall_test_{uuid.uuid4().hex[:12]}"
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(drivername="postgresql", database=name).render_as_string(
            hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def test_ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="session")
def ca_bundle(test_ca: TestCA, tmp_path_factory: pytest.TempPathFactory) -> str:
    return test_ca.ca_bundle_path(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn() as standin:
        yield standin


@pytest.fixture
def pagerduty(test_ca: TestCA) -> Iterator[PagerDutyStandIn]:
    with PagerDutyStandIn(test_ca) as standin:
        yield standin


@pytest.fixture
def bot_env(database_url: str, slack: SlackStandIn, pagerduty: PagerDutyStandIn,
            ca_bundle: str) -> dict[str, str]:
    """Environment of a bot wired to the stand-ins, with quick retries for tests."""
    return {
        "DATABASE_URL": database_url,
        "SLACK_BOT_TOKEN": slack.token,
        "SLACK_API_URL": slack.base_url,
        "SLACK_ALERT_CHANNEL": "#ml-alerts",
        "PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
        "PAGERDUTY_EVENTS_URL": pagerduty.events_url,
        "PAGERDUTY_API_URL": pagerduty.api_url,
        "PAGERDUTY_API_TOKEN": pagerduty.api_token,
        "ALERT_WEBHOOK_TOKEN": WEBHOOK_TOKEN,
        "ONCALL_CA_BUNDLE": ca_bundle,
        "OUTBOX_BACKOFF_BASE_SECONDS": "0.1",
        "OUTBOX_BACKOFF_MAX_SECONDS": "0.5",
        "OUTBOX_POLL_SECONDS": "0.1",
        "DELIVERY_TIMEOUT_SECONDS": "2",
    }


@pytest.fixture
def bot(bot_env: dict[str, str], tmp_path: Path) -> Iterator[BotProcess]:
    process = BotProcess(bot_env, log_path=tmp_path / "bot.log", token=WEBHOOK_TOKEN)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def canary() -> Iterator[CanaryServer]:
    """A server no hostile input may make the bot reach: assert `canary.requests == []`."""
    with CanaryServer() as server:
        yield server
