"""Runbooks in incidents: diagnostics in the thread when an incident opens, and a rollback
from Slack that moves the alias on a real MLflow server, with the health check after."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bot.runbooks.registry import ModelRegistry
from tests.conftest import WEBHOOK_TOKEN
from tests.harness import ROOT, BotProcess, example
from tests.integration.test_slack_pagerduty import (
    ON_CALL,
    PD_WEBHOOK_SECRET,
    SIGNING_SECRET,
    STRANGER,
    block_actions_body,
    slack_headers,
)
from tests.services import ModelHealth, mlflow_server, prometheus_server  # noqa: F401
from tests.standins.signing import slash_command_body

ROUTES = """
version: 1
permissions: {users: [], groups: [], on_call: true}
routes:
  - name: page
    matchers: ['severity=~"critical|page"']
    tier: L1
    runbook: error-rate-high
  - name: default
    tier: L0
"""


def versions(mlflow, model: str, count: int) -> list[str]:
    """`count` new versions of `model` (created if missing); the bot's set_alias then moves
    champion through them, so the version before the last is the recorded previous one."""
    if mlflow.client.get(f"{mlflow.url}/api/2.0/mlflow/registered-models/get",
                         params={"name": model}).status_code != 200:
        mlflow.create_model(model)
    made = [mlflow.create_version(model) for _ in range(count)]

    async def move() -> None:
        async with httpx.AsyncClient() as client:
            registry = ModelRegistry(client, mlflow.url, clock=lambda: datetime.now(UTC))
            for version in made:
                await registry.set_alias(model, "champion", version)

    asyncio.run(move())
    return made


@pytest.fixture
def runbook_bot(bot_env, tmp_path: Path, slack, pagerduty, mlflow_server,  # noqa: F811
                prometheus_server):  # noqa: F811
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    slack.add_user(ON_CALL, "ada", "ada@example.com")
    slack.add_user(STRANGER, "eve", "eve@example.com")
    pagerduty.set_oncalls([{"user_id": "PADA001", "user_name": "Ada Lovelace",
                            "email": "ada@example.com", "escalation_policy_id": "PEP0001",
                            "schedule_id": "PSCHED1", "escalation_level": 1}])
    env = {**bot_env, "ONCALL_CONFIG": str(routes), "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "PAGERDUTY_WEBHOOK_SECRET": PD_WEBHOOK_SECRET, "ONCALL_RUNBOOKS": str(ROOT / "runbooks"),
           "PROMETHEUS_URL": prometheus_server.url, "MLFLOW_TRACKING_URI": mlflow_server.url,
           "PAGERDUTY_FROM_EMAIL": "oncall-bot@example.com"}
    bot = BotProcess(env, log_path=tmp_path / "bot.log", token=WEBHOOK_TOKEN)
    bot.start()
    yield bot
    bot.stop()


def press(bot, slack, action: str, value: str, user: str) -> str:
    name = f"press-{time.monotonic_ns()}"
    (message,) = slack.top_level_messages()
    body = block_actions_body(action, value, user, message["channel"], message["ts"],
                              response_url=slack.response_url(name))
    assert bot.http.post("/slack/events", content=body,
                         headers=slack_headers(SIGNING_SECRET, body)).status_code == 200
    return name


def answers(bot, slack, text: str, user: str, count: int) -> list[str]:
    """POST a signed /oncall and wait for `count` answers through its response_url."""
    name = f"cmd-{time.monotonic_ns()}"
    body = slash_command_body(text, user_id=user, response_url=slack.response_url(name))
    assert bot.http.post("/slack/events", content=body,
                         headers=slack_headers(SIGNING_SECRET, body)).status_code == 200
    found = bot.until(lambda: len(slack.responses(name)) >= count and slack.responses(name),
                      timeout=60, what=f"{count} answers to /oncall {text}")
    return [answer["text"] for answer in found]


def alert_for(model: str) -> dict:
    doc = example("alertmanager-firing.json")
    doc["alerts"][0]["labels"]["model"] = model
    doc["alerts"][0]["fingerprint"] = f"fp-{model}"
    return doc


def test_diagnostics_in_the_thread_then_a_confirmed_rollback_moves_the_alias(
        runbook_bot, slack, pagerduty, mlflow_server, prometheus_server):  # noqa: F811
    bot = runbook_bot
    good, bad = versions(mlflow_server, "churn", 2)
    prometheus_server.metrics.models[("churn", "production")] = ModelHealth(error_ratio=0.01)

    assert bot.post("alertmanager", alert_for("churn")).status_code == 202
    ((incident_id, key),) = bot.rows("SELECT id, key FROM incident")
    bot.until(lambda: bot.rows("SELECT id FROM runbookrun WHERE status NOT IN "
                               "('pending', 'running')"), timeout=60, what="the diagnostics")
    bot.until(bot.outbox_settled, timeout=20, what="the thread reply")
    (message,) = slack.top_level_messages()
    (reply,) = [r for r in slack.thread(message["channel"], message["ts"])
                if "Diagnostics" in json.dumps(r["blocks"])]
    shown = json.dumps(reply["blocks"])
    assert "error-rate-high" in shown and "what_changed" in shown
    assert f"serves v{bad}" in shown and f"v{good}" in shown  # what changed: the version now
    # The reply shows the finished run; whether it got there by edits or was first posted
    # after the run ended depends on timing (edits coalesce), so no count of chat.update.
    (note,) = pagerduty.notes
    assert "error-rate-high" in note["content"]
    (entry,) = bot.rows("SELECT detail FROM timelineentry WHERE kind = 'diagnostics'")
    assert "what_changed" in entry.detail

    assert "incident_rollback" in json.dumps(message["blocks"])
    refused = press(bot, slack, "incident_rollback", str(incident_id), STRANGER)
    (answer,) = bot.until(lambda: slack.responses(refused), what="the refusal")
    assert "You may not roll back a model" in answer["text"]

    asked = press(bot, slack, "incident_rollback", str(incident_id), ON_CALL)
    (preview,) = bot.until(lambda: slack.responses(asked), what="the preview")
    assert preview["response_type"] == "ephemeral"
    assert f"v{bad} → v{good}" in preview["text"] and "set_alias" in preview["text"]
    assert mlflow_server.alias("churn", "champion") == bad  # nothing moved yet
    confirm = next(e for b in preview["blocks"] if b["type"] == "actions"
                   for e in b["elements"] if e["action_id"] == "rollback_confirm")

    confirmed = press(bot, slack, "rollback_confirm", confirm["value"], ON_CALL)
    (started,) = bot.until(lambda: slack.responses(confirmed), what="the confirmation")
    assert "Rolling back" in started["text"]
    bot.until(lambda: bot.rows("SELECT detail FROM timelineentry WHERE kind = 'rollback'"),
              timeout=60, what="the rollback to finish")
    assert mlflow_server.alias("churn", "champion") == good
    (started_entry,) = bot.rows(
        "SELECT actor, detail FROM timelineentry WHERE kind = 'rollback_started'")
    assert started_entry.actor == f"slack:{ON_CALL}" and f"v{bad} → v{good}" in started_entry.detail
    (done,) = bot.rows("SELECT actor, detail FROM timelineentry WHERE kind = 'rollback'")
    assert done.detail.startswith("succeeded") and f"v{bad} → v{good}" in done.detail
    assert "health check after: passed" in done.detail
    assert bot.rows("SELECT model FROM rollbacklock") == []


def test_two_rollbacks_of_one_model_at_once_one_is_refused(
        runbook_bot, slack, pagerduty, mlflow_server, prometheus_server):  # noqa: F811
    bot = runbook_bot
    good, bad = versions(mlflow_server, "lockdemo", 2)
    # Unhealthy after the rollback too: the first run keeps waiting for health, holding the lock.
    prometheus_server.metrics.models[("lockdemo", "production")] = ModelHealth(error_ratio=0.5)
    assert bot.post("alertmanager", alert_for("lockdemo")).status_code == 202
    bot.until(bot.outbox_settled, what="the incident message")
    ((incident_id,),) = bot.rows("SELECT id FROM incident")
    values = []
    for _ in range(2):  # two previews, so two confirmations, each good once
        asked = press(bot, slack, "incident_rollback", str(incident_id), ON_CALL)
        (preview,) = bot.until(lambda a=asked: slack.responses(a), what="a preview")
        values += [e["value"] for b in preview["blocks"] if b["type"] == "actions"
                   for e in b["elements"] if e["action_id"] == "rollback_confirm"]
    names: list[str] = []
    threads = [threading.Thread(target=lambda v=value: names.append(
        press(bot, slack, "rollback_confirm", v, ON_CALL))) for value in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    answers = [bot.until(lambda n=n: slack.responses(n), what="an answer")[0]["text"]
               for n in names]
    assert sum("Rolling back" in a for a in answers) == 1
    assert sum("already running" in a for a in answers) == 1
    assert len(bot.rows("SELECT id FROM runbookrun WHERE purpose = 'rollback'")) == 1


def test_runbook_and_rollback_commands(runbook_bot, slack, mlflow_server,  # noqa: F811
                                       prometheus_server):  # noqa: F811
    from tests.integration.test_slack_pagerduty import slash

    bot = runbook_bot
    good, bad = versions(mlflow_server, "cmddemo", 2)
    prometheus_server.metrics.models[("cmddemo", "production")] = ModelHealth(error_ratio=0.01)
    listed = slash(bot, slack, "runbook list")[1]
    assert "`rollback-model` (changes production)" in listed and "`error-rate-high`" in listed

    asked = "runbook run error-rate-high model=cmddemo environment=production"
    assert "You may not run a runbook" in slash(bot, slack, asked)[1]
    assert bot.rows("SELECT id FROM runbookrun") == []
    started, ran = sorted(answers(bot, slack, asked, ON_CALL, 2),
                          key=lambda text: not text.startswith("Started"))
    assert "Started `error-rate-high`" in started
    assert "error-rate-high:" in ran and "what_changed" in ran and f"v{bad}" in ran
    (record,) = bot.rows("SELECT purpose, status, requested_by FROM runbookrun")
    assert (record.purpose, record.requested_by) == ("manual", f"slack:{ON_CALL}")
    assert record.status not in ("pending", "running")

    assert "changes production" in slash(bot, slack, "runbook run rollback-model model=x",
                                         user=ON_CALL)[1]
    assert "no runbook `nope`" in slash(bot, slack, "runbook run nope", user=ON_CALL)[1]
    assert "You may not roll back" in slash(bot, slack, "rollback cmddemo", user=STRANGER)[1]
    preview = slash(bot, slack, "rollback cmddemo", user=ON_CALL)[1]
    assert f"v{bad} → v{good}" in preview
    assert "already serves" in slash(bot, slack, f"rollback cmddemo to {bad}", user=ON_CALL)[1]
    assert "Could not read the registry" in slash(bot, slack, "rollback ghost", user=ON_CALL)[1]
    assert mlflow_server.alias("cmddemo", "champion") == bad
