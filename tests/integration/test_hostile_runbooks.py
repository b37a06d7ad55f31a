"""Hostile alerts against the running bot's runbooks: annotations that point diagnostics
at other hosts (SSRF), at cloud metadata, or through a redirect, and labels that try to
rewrite PromQL. Each is refused, nothing reaches the canary, and nothing of what the
canary would answer reaches Slack or PagerDuty."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import WEBHOOK_TOKEN
from tests.harness import ROOT, BotProcess, example
from tests.standins._server import Reply, Request, StandIn
from tests.standins.canary import SECRET_BODY

METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


class Redirector(StandIn):
    """An allowed host that answers every request with a redirect to `target`."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def route(self, req: Request) -> Reply:
        return Reply(302, {}, headers={"Location": self.target})


class PromQLRecorder(StandIn):
    """A Prometheus that answers every query with no series and keeps the queries."""

    def queries(self) -> list[str]:
        return [r.query["query"][0] for r in self.requests if "query" in r.query]

    def route(self, req: Request) -> Reply:
        return Reply(200, {"status": "success", "data": {"resultType": "vector", "result": []}})


@pytest.fixture
def prometheus() -> Iterator[PromQLRecorder]:
    with PromQLRecorder() as standin:
        yield standin


def start(bot_env: dict[str, str], tmp_path: Path, **extra: str) -> BotProcess:
    env = {**bot_env, "ONCALL_RUNBOOKS": str(ROOT / "runbooks"), "PAGERDUTY_FROM_EMAIL": "oncall-bot@example.com",
           **extra}
    process = BotProcess(env, log_path=tmp_path / "bot.log", token=WEBHOOK_TOKEN)
    process.start()
    return process


def endpoint_down(model: str, endpoint_url: str, **labels: str) -> dict:
    doc = example("alertmanager-firing.json")
    alert = doc["alerts"][0]
    alert["labels"].update({"alertname": "ModelEndpointDown", "model": model, **labels})
    alert["annotations"]["endpoint_url"] = endpoint_url
    alert["fingerprint"] = f"fp-{model}"
    return doc


def finished_checks(bot: BotProcess, count: int) -> dict[str, tuple[str, str]]:
    """model -> (status, output) of each run's endpoint_health step, once every run ended
    and every delivery it owed (Slack thread, PagerDuty note) was made."""
    bot.until(lambda: len(bot.rows("SELECT id FROM runbookrun WHERE status NOT IN ('pending', 'running')"))
              == count, timeout=60, what="the diagnostics")
    bot.until(bot.outbox_settled, timeout=30, what="the deliveries")
    rows = bot.rows("SELECT i.model, s.status, s.output FROM stepresult s JOIN runbookrun r ON r.id = s.run_id "
                    "JOIN incident i ON i.id = r.incident_id WHERE s.name = 'endpoint_health'")
    return {row.model: (row.status, row.output) for row in rows}


def assert_nothing_of_the_canary_left(slack, pagerduty) -> None:
    sent = b"".join(r.raw for r in [*slack.requests, *pagerduty.requests])
    for value in SECRET_BODY.values():
        assert value.encode() not in sent


def test_endpoint_url_annotation_at_an_unlisted_host_is_refused_and_nothing_leaks(
        bot_env, tmp_path, canary, slack, pagerduty):
    """The reported SSRF: ModelEndpointDown with endpoint_url at another host."""
    bot = start(bot_env, tmp_path)
    try:
        assert bot.post("alertmanager", endpoint_down("churn", canary.url())).status_code == 202
        status, output = finished_checks(bot, 1)["churn"]
        assert status == "failed" and "host not allowed: set RUNBOOK_HTTP_ALLOWED_HOSTS" in output
        (message,) = slack.top_level_messages()
        shown = json.dumps(slack.thread(message["channel"], message["ts"]))
        assert "RUNBOOK_HTTP_ALLOWED_HOSTS" in shown  # the on-call sees why, in the thread
        assert pagerduty.notes and "RUNBOOK_HTTP_ALLOWED_HOSTS" in pagerduty.notes[0]["content"]
    finally:
        bot.stop()
    assert canary.requests == []
    assert_nothing_of_the_canary_left(slack, pagerduty)


def test_metadata_addresses_and_redirects_to_unlisted_hosts_are_refused_even_when_listed(
        bot_env, tmp_path, canary, slack, pagerduty, prometheus):
    with Redirector(canary.url()) as redirector:
        allowed = f"127.0.0.1:{redirector.port},169.254.169.254,[::ffff:169.254.169.254]"
        bot = start(bot_env, tmp_path, RUNBOOK_HTTP_ALLOWED_HOSTS=allowed, PROMETHEUS_URL=prometheus.origin)
        try:
            hostile_environment = 'production"} or vector(1) #'
            for doc in (endpoint_down("redirected", f"{redirector.origin}/health", environment=hostile_environment),
                        endpoint_down("metadata", METADATA),
                        endpoint_down("mapped", "http://[::ffff:169.254.169.254]/latest/meta-data/")):
                assert bot.post("alertmanager", doc).status_code == 202
            checks = finished_checks(bot, 3)
        finally:
            bot.stop()
        assert len(redirector.requests) == 1  # the allowed host was asked; its redirect was not followed
    status, output = checks["redirected"]
    assert status == "failed" and f"127.0.0.1:{canary.port}: host not allowed" in output
    for model in ("metadata", "mapped"):
        status, output = checks[model]
        assert status == "failed" and "never fetched" in output, output
    assert canary.requests == []
    assert_nothing_of_the_canary_left(slack, pagerduty)
    # The label stayed one PromQL string: Prometheus got it escaped inside its quotes.
    (query,) = [q for q in prometheus.queries() if "redirected" in q]
    assert 'environment="production\\"} or vector(1) #"' in query
