"""The adapters create_app builds once: the HTTP probe and Prometheus trust ONCALL_CA_BUNDLE,
and the routing-key variables the routing file names are read when the bot starts.

Everything goes over real connections: a TLS server on 127.0.0.1 with a certificate from the
test CA, the Slack and PagerDuty stand-ins, and the app's own workers (its lifespan).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from bot.main import create_app
from bot.runbooks import RunResult, parse_runbook, run
from bot.settings import load_settings
from tests.conftest import WEBHOOK_TOKEN
from tests.harness import example
from tests.standins._server import Reply, StandIn
from tests.standins.signing import block_actions_body, slack_headers
from tests.standins.tls import TestCA

SIGNING_SECRET = "slack-signing-secret-for-tests"
CHURN_KEY = "CHURNKEY0123456789ABCDEFGHIJKLMN"  # 32 characters, like a real integration key
FRAUD_KEY = "FRAUDKEY0123456789ABCDEFGHIJKLMN"
PLATFORM = "U0PLATFRM"


class PrometheusOverTls(StandIn):
    """Prometheus's query API, and a readiness page, over https only."""

    scheme = "https"

    def route(self, req):
        if req.path == "/api/v1/query":
            return Reply(200, {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"model": "churn"}, "value": [1764979200, "0.02"]}]}})
        return Reply(200, {"ready": True})


@pytest.fixture
def prometheus_tls(test_ca: TestCA):
    with PrometheusOverTls(ssl_context=test_ca.server_ssl_context()) as server:
        yield server


def run_in_app(settings: dict[str, str], runbook) -> RunResult:
    """Run `runbook` with the context create_app gives runs (its probe and Prometheus)."""
    app = create_app(load_settings(**settings))
    context = app.state.runs.context()

    async def go() -> RunResult:
        try:
            return await run(runbook, {}, context=context)
        finally:
            await context.probe.aclose()

    try:
        return asyncio.run(go())
    finally:
        app.state.db.dispose()


def tls_runbook(origin: str):
    return parse_runbook({"version": 1, "name": "tls", "steps": [
        {"name": "errors", "kind": "prometheus", "query": "sum(rate(errors_total[5m]))",
         "threshold": {"op": "<", "value": 0.05}},
        {"name": "ready", "kind": "http", "url": f"{origin}/ready",
         "checks": [{"path": "$.ready", "op": "==", "value": True}]},
    ]}, "tls.yaml")


def test_prometheus_and_the_http_probe_trust_the_ca_bundle(tmp_path, prometheus_tls, ca_bundle):
    result = run_in_app({"database_url": f"sqlite:///{tmp_path / 'bot.db'}",
                         "prometheus_url": prometheus_tls.origin, "oncall_ca_bundle": ca_bundle},
                        tls_runbook(prometheus_tls.origin))
    errors, ready = result.outcomes
    assert (errors.status, ready.status) == ("passed", "passed"), (errors.output, ready.output)
    assert errors.values == {"value": 0.02, "series": 1}
    assert [r.path for r in prometheus_tls.requests] == ["/api/v1/query", "/ready"]


def test_without_the_ca_bundle_the_test_ca_is_not_trusted(tmp_path, prometheus_tls):
    result = run_in_app({"database_url": f"sqlite:///{tmp_path / 'bot.db'}",
                         "prometheus_url": prometheus_tls.origin},
                        tls_runbook(prometheus_tls.origin))
    for outcome in result.outcomes:
        assert outcome.status == "error" and "CERTIFICATE_VERIFY_FAILED" in outcome.output, outcome
    assert prometheus_tls.requests == []


ROUTES = f"""
version: 1
teams:
  ds-churn:
    slack_group: S0CHURNDS
    pagerduty_routing_key_env: CHURN_PAGERDUTY_ROUTING_KEY
  ds-fraud:
    slack_group: S0FRAUDDS
    pagerduty_routing_key_env: FRAUD_PAGERDUTY_ROUTING_KEY
permissions:
  users: [{PLATFORM}]
  on_call: false
routes:
  - name: churn
    matchers: ['model="churn"']
    tier: L1
    team: ds-churn
  - name: fraud
    matchers: ['model="fraud"']
    tier: L1
    team: ds-fraud
  - name: default
    tier: L0
"""


async def eventually(condition, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
    return value


def test_routing_keys_are_read_at_start_not_when_a_page_is_sent(bot_env, tmp_path, slack,
                                                               pagerduty, monkeypatch):
    """The churn team's key is set at start and changed after; the fraud team's is set only
    after. Escalating pages churn's service with the key of the start, and falls back to
    fraud's Slack group."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    monkeypatch.setenv("CHURN_PAGERDUTY_ROUTING_KEY", CHURN_KEY)
    monkeypatch.delenv("FRAUD_PAGERDUTY_ROUTING_KEY", raising=False)
    app = create_app(load_settings(**{k.lower(): v for k, v in bot_env.items()},
                                   oncall_config=str(routes),
                                   slack_signing_secret=SIGNING_SECRET))
    monkeypatch.setenv("CHURN_PAGERDUTY_ROUTING_KEY", "CHANGEDKEY456789ABCDEFGHIJKLMNOP")
    monkeypatch.setenv("FRAUD_PAGERDUTY_ROUTING_KEY", FRAUD_KEY)

    async def scenario() -> dict[str, str]:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bot") as client:
            keys = {}
            for count, model in enumerate(("churn", "fraud"), start=1):
                doc = example("alertmanager-firing.json")
                doc["alerts"][0]["labels"]["model"] = model
                answer = await client.post("/webhooks/alertmanager", content=json.dumps(doc),
                                           headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}",
                                                    "Content-Type": "application/json"})
                assert answer.status_code == 202, answer.text
                await eventually(lambda n=count: len(slack.top_level_messages()) == n,
                                 f"the {model} incident's message")
                message = slack.top_level_messages()[-1]
                incident_id, keys[model] = await asyncio.to_thread(_incident_of, app, model)
                body = block_actions_body("incident_escalate", str(incident_id), PLATFORM,
                                          message["channel"], message["ts"],
                                          response_url=slack.response_url(model))
                answer = await client.post("/slack/events", content=body,
                                           headers=slack_headers(SIGNING_SECRET, body))
                assert answer.status_code == 200, answer.text
            await eventually(lambda: pagerduty.events_for(f"{keys['churn']}-l2"), "churn's L2 page")
            await eventually(lambda: _replies_mention(slack, "<!subteam^S0FRAUDDS>"),
                             "fraud's Slack group in the thread")
            return keys

    keys = asyncio.run(scenario())
    app.state.db.dispose()
    (l2,) = pagerduty.events_for(f"{keys['churn']}-l2")
    assert l2["event"]["routing_key"] == CHURN_KEY
    assert pagerduty.events_for(f"{keys['fraud']}-l2") == []


def _incident_of(app, model: str) -> tuple[int, str]:
    with app.state.db.reader.connect() as connection:
        ((incident_id, key),) = connection.execute(
            text("SELECT id, key FROM incident WHERE model = :model"), {"model": model}).all()
    return incident_id, key


def _replies_mention(slack, mention: str) -> bool:
    return any(mention in reply["text"] for message in slack.top_level_messages()
               for reply in slack.thread(message["channel"], message["ts"]))


def test_the_probe_is_built_once_for_every_run(tmp_path: Path):
    app = create_app(load_settings(database_url=f"sqlite:///{tmp_path / 'bot.db'}"))
    first, second = app.state.runs.context(), app.state.runs.context()
    assert first.probe is not None and first.probe is second.probe
    assert first.prometheus is second.prometheus
    asyncio.run(first.probe.aclose())
    app.state.db.dispose()
