"""The bot's app in this process, served over real HTTP by uvicorn on a free port, with
a clock the test sets: the console's link and session expiry are checked by moving the
clock, never by sleeping. Also: sign-in through a link, and a week of incidents."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from sqlalchemy import text

from bot.main import create_app
from bot.settings import load_settings
from bot.usecases.actions import Actor, acknowledge, locked
from tests.harness import free_port, wait_for

CONSOLE_SECRET = "console-secret-for-tests-0123456789abcdef"


class Clock:
    """The bot's time of day, moved by the test."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Site:
    url: str
    app: Any
    clock: Clock

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, follow_redirects=False)


@contextmanager
def served(env: dict[str, str], *, clock: Clock, port: int | None = None) -> Iterator[Site]:
    """create_app(settings from `env`, clock=clock), served on 127.0.0.1 until the block ends."""
    port = port or free_port()
    settings = load_settings(**{k.lower(): v for k, v in env.items()})
    app = create_app(settings, clock=clock)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"bot-{port}", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=60, what="the app to start")
        assert server.started, "the app did not start"
        yield Site(url=f"http://127.0.0.1:{port}", app=app, clock=clock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def link_in(text: str) -> str:
    """The sign-in URL in a Slack answer (`<url|label>`) or the CLI's output."""
    return re.search(r"https?://[^\s|>]+/console/sign-in\?token=[A-Za-z0-9_\-]+", text)[0]


def local(link: str, site: Site) -> str:
    """The link's path and query on the site under test (PUBLIC_URL may name another host)."""
    return site.url + link[link.index("/console/"):]


def form_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))


def sign_in(http: httpx.Client, link: str) -> httpx.Response:
    """Open the link (GET: the Sign in page), then press Sign in (POST), as a browser would
    with its cookies; returns the POST's response."""
    page = http.get(link)
    assert page.status_code == 200, page.text
    nonce = page.cookies.get("oncall_console_signin")
    return http.post("/console/sign-in", data=form_fields(page.text),
                     headers={"Cookie": f"oncall_console_signin={nonce}"})


MODELS = ("churn", "fraud", "ranker", "pricing", "search")
ALERTS = ("ModelErrorRateHigh", "PredictionLatencyHigh", "FeatureDrift", "ModelDown")


def seed_week(site: Site, token: str, *, count: int = 30, hostile_label: str | None = None) -> None:
    """`count` incidents over the week before the clock's now, through the real webhook at
    the times the clock is moved to: most acknowledged, most resolved, a few still open.
    The clock ends where it started."""
    end = site.clock.now
    site.clock.now = end - timedelta(days=7)
    actor = Actor(id="slack:U0ADA0001", mention="<@U0ADA0001>", via="slack")
    headers = {"Authorization": f"Bearer {token}"}
    with site.client() as http:
        for n in range(count):
            site.clock.now = end - timedelta(days=7) + timedelta(hours=5.5 * n + 1)
            model, alert = MODELS[n % len(MODELS)], ALERTS[n % len(ALERTS)]
            labels = {"job": f"{model}-scorer", "n": str(n)}
            if hostile_label is not None and n == count - 1:
                labels["note"] = hostile_label
            body = {"alertname": alert, "model": model, "version": str(3 + n // 10),
                    "environment": "production",
                    "severity": "critical" if n % 3 == 0 else "warning",
                    "summary": f"{alert} on {model}", "labels": labels}
            answer = http.post("/webhooks/generic", json=body, headers=headers)
            assert answer.status_code == 202, answer.text
            incident_id = answer.json()["incidents_opened"][0]
            settle(site)
            if n >= count - 3:
                continue  # the newest stay open
            site.clock.advance(minutes=3 + n % 7)
            with site.app.state.db.write() as session:
                acknowledge(locked(incident_id, session=session), session=session,
                            policy=site.app.state.pipeline.policy, now=site.clock.now, actor=actor)
            site.app.state.dispatcher.wake()
            settle(site)
            site.clock.advance(minutes=20 + 9 * (n % 5))
            resolved = http.post("/webhooks/generic", json={**body, "status": "resolved"},
                                 headers=headers)
            assert resolved.status_code == 202, resolved.text
            settle(site)
    site.clock.now = end


def settle(site: Site) -> None:
    """Wait until what the last change owed is delivered and its runs are done, so each
    happens at the clock's time of the change, not at a later one."""
    def settled() -> bool:
        with site.app.state.db.reader.connect() as connection:
            return not connection.execute(text(
                "SELECT 1 FROM delivery WHERE state = 'pending' "
                "UNION ALL SELECT 1 FROM runbookrun WHERE status IN ('pending', 'running')")).first()
    wait_for(settled, timeout=30, what="deliveries and runs to settle")
