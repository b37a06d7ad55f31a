"""Issue 10, items 4 and 8: who may run runbooks and roll back, and what a Confirm can carry.

Each test sends the hostile request over real HTTP to the running bot (signed Slack
requests), against a real MLflow where the registry is involved, and checks that it
is refused and that nothing changed: the database, Slack, PagerDuty, MLflow's alias,
and a canary server nothing may reach.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.models import RollbackConfirmation
from tests.conftest import WEBHOOK_TOKEN
from tests.harness import ROOT, BotProcess
from tests.integration.test_runbooks_in_incidents import alert_for, answers, versions
from tests.integration.test_slack_pagerduty import (
    ON_CALL,
    PD_WEBHOOK_SECRET,
    PLATFORM,
    SIGNING_SECRET,
    STRANGER,
    block_actions_body,
    slack_headers,
)
from tests.services import ModelHealth, mlflow_server, prometheus_server  # noqa: F401
from tests.standins.signing import slash_command_body

ROUTES = f"""
version: 1
permissions: {{users: [{PLATFORM}], groups: [], on_call: true}}
routes:
  - name: page
    matchers: ['severity=~"critical|page"']
    tier: L1
    runbook: error-rate-high
  - name: default
    tier: L0
"""
PROBE = """
version: 1
name: probe
description: a diagnostic that needs no outside service
matchers: []
params:
  window: {type: string, pattern: '[0-9]+[smh]', default: 5m}
  count: {type: int, default: 1}
steps:
  - name: say
    kind: note
    message: "probed over {{ params.window }}, {{ params.count }} time(s)"
"""


@pytest.fixture
def guarded_bot(bot_env, tmp_path: Path, slack, pagerduty, mlflow_server,  # noqa: F811
                prometheus_server):  # noqa: F811
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    runbooks = tmp_path / "runbooks"
    shutil.copytree(ROOT / "runbooks", runbooks)
    (runbooks / "probe.yaml").write_text(PROBE)
    slack.add_user(ON_CALL, "ada", "ada@example.com")
    slack.add_user(PLATFORM, "grace", "grace@example.com")
    slack.add_user(STRANGER, "eve", "eve@example.com")
    pagerduty.set_oncalls([{"user_id": "PADA001", "user_name": "Ada Lovelace",
                            "email": "ada@example.com", "escalation_policy_id": "PEP0001",
                            "schedule_id": "PSCHED1", "escalation_level": 1}])
    env = {**bot_env, "ONCALL_CONFIG": str(routes), "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "PAGERDUTY_WEBHOOK_SECRET": PD_WEBHOOK_SECRET, "ONCALL_RUNBOOKS": str(runbooks),
           "PROMETHEUS_URL": prometheus_server.url, "MLFLOW_TRACKING_URI": mlflow_server.url,
           "PAGERDUTY_FROM_EMAIL": "oncall-bot@example.com"}
    bot = BotProcess(env, log_path=tmp_path / "bot.log", token=WEBHOOK_TOKEN)
    bot.start()
    yield bot
    bot.stop()


def model_name() -> str:
    return f"m{uuid.uuid4().hex[:8]}"  # MLflow and Prometheus outlive one test


def press(bot, slack, action: str, value: str, user: str) -> str:
    """Click a button of an ephemeral message (a preview); returns the response_url name."""
    name = f"press-{time.monotonic_ns()}"
    body = block_actions_body(action, value, user, "C0ALERTS01", "1700000000.000100",
                              response_url=slack.response_url(name), block_id="rollback")
    assert bot.http.post("/slack/events", content=body,
                         headers=slack_headers(SIGNING_SECRET, body)).status_code == 200
    return name


def answer_to(bot, slack, name: str) -> str:
    (answer,) = bot.until(lambda: slack.responses(name), what="the answer")
    return answer["text"]


def confirm_value(bot, slack, model: str, user: str = ON_CALL) -> str:
    (preview,) = answers(bot, slack, f"rollback {model}", user, 1)
    assert "→" in preview
    ((value,),) = bot.rows("SELECT id FROM rollbackconfirmation")
    return value


def nothing_ran(bot) -> None:
    assert bot.rows("SELECT id FROM runbookrun") == []
    assert bot.rows("SELECT model FROM rollbacklock") == []


def test_a_stranger_running_a_runbook_is_refused_and_nothing_changes(
        guarded_bot, slack, pagerduty, canary):
    bot = guarded_bot
    before = bot.snapshot()
    asked = f"runbook run model-endpoint-down model=churn endpoint_url={canary.url()}"
    (refusal,) = answers(bot, slack, asked, STRANGER, 1)
    assert "You may not run a runbook" in refusal
    assert bot.snapshot() == before
    nothing_ran(bot)
    assert [r.name for r in slack.calls() if r.name.startswith("chat.")] == []
    assert len(slack.responses()) == 1 and slack.ephemeral == []
    assert pagerduty.triggers() == [] and pagerduty.notes == []
    assert {(r.http_method, r.path) for r in pagerduty.requests} <= {("GET", "/oncalls")}
    assert canary.requests == []


def test_a_permitted_run_starts_in_the_worker_and_answers_through_the_response_url(
        guarded_bot, slack):
    bot = guarded_bot
    started, result = sorted(answers(bot, slack, "runbook run probe window=90s count=3",
                                     PLATFORM, 2), key=lambda text: not text.startswith("Started"))
    assert "Started `probe` (run #1)" in started
    assert "probe: passed" in result and "probed over 90s, 3 time(s)" in result
    (record,) = bot.rows("SELECT purpose, status, requested_by FROM runbookrun")
    assert tuple(record) == ("manual", "passed", f"slack:{PLATFORM}")
    assert slack.ephemeral == []  # well within Slack's 30 minutes: the response_url


def test_a_result_the_response_url_no_longer_takes_comes_as_an_ephemeral_message(
        guarded_bot, slack):
    bot = guarded_bot
    slack.fail("response_url", status=404, times=2)  # expired, as after Slack's 30 minutes
    body = slash_command_body("runbook run probe", user_id=PLATFORM, channel_id="C0ALERTS01",
                              response_url=slack.response_url("expired"))
    assert bot.http.post("/slack/events", content=body,
                         headers=slack_headers(SIGNING_SECRET, body)).status_code == 200
    (message,) = bot.until(lambda: slack.ephemeral, timeout=30, what="the ephemeral result")
    assert (message["channel"], message["user"]) == ("C0ALERTS01", PLATFORM)
    assert "probe: passed" in message["text"]
    assert slack.responses("expired") == []


def test_a_bad_param_is_refused_naming_it_and_the_rule_and_nothing_runs(guarded_bot, slack):
    bot = guarded_bot
    for text, refused in (
        ("runbook run probe window=2m])+or+vector(1)",
         "param 'window' (given): '2m])+or+vector(1)' does not match the pattern '[0-9]+[smh]'"),
        ("runbook run probe count=many", "param 'count' (given): expected int, got 'many'"),
        ("runbook run probe colour=red", "unknown param(s) colour"),
        ("runbook run probe window=<!channel>", "'&lt;!channel&gt;' does not match the pattern"),
    ):
        (answer,) = answers(bot, slack, text, ON_CALL, 1)
        assert answer.startswith("Not run:") and refused in answer, (text, answer)
    nothing_ran(bot)


def test_forged_confirmations_are_refused_and_nothing_changes(guarded_bot, slack,
                                                             mlflow_server):  # noqa: F811
    bot = guarded_bot
    model = model_name()
    good, bad = versions(mlflow_server, model, 2)
    value = confirm_value(bot, slack, model)
    forged = [
        "Zm9yZ2VkLWNvbmZpcm1hdGlvbi1pZA",  # an id the bot never gave
        value[:-1] + ("A" if value[-1] != "A" else "B"),  # a real one, tampered
        json.dumps({"incident": None, "model": model, "alias": "champion", "current": bad,
                    "target": good, "runbook": "rollback-model"}),  # the old, trusted format
        "",
        "x" * 5000 + "\x00",
    ]
    for forgery in forged:
        answer = answer_to(bot, slack, press(bot, slack, "rollback_confirm", forgery, ON_CALL))
        assert answer == "That confirmation is not a rollback this bot offered; nothing changed."
    refused = answer_to(bot, slack, press(bot, slack, "rollback_confirm", value, STRANGER))
    assert "You may not roll back a model" in refused
    # Someone else allowed to roll back cannot use Ada's preview either.
    assert "someone else's preview" in answer_to(
        bot, slack, press(bot, slack, "rollback_confirm", value, PLATFORM))
    nothing_ran(bot)
    assert mlflow_server.alias(model, "champion") == bad
    # The real one still works, once.
    assert "Rolling back" in answer_to(bot, slack, press(bot, slack, "rollback_confirm", value,
                                                         ON_CALL))
    assert "already confirmed" in answer_to(bot, slack, press(bot, slack, "rollback_confirm",
                                                              value, ON_CALL))
    assert len(bot.rows("SELECT id FROM runbookrun")) == 1


def test_an_expired_confirmation_is_refused(guarded_bot, slack, mlflow_server):  # noqa: F811
    bot = guarded_bot
    model = model_name()
    _, bad = versions(mlflow_server, model, 2)
    value = confirm_value(bot, slack, model)
    with bot.db.write() as session:  # eleven minutes later, as far as the row is concerned
        row = session.get(RollbackConfirmation, value)
        row.expires_at = datetime.now(UTC) - timedelta(minutes=1)
    answer = answer_to(bot, slack, press(bot, slack, "rollback_confirm", value, ON_CALL))
    assert "This preview expired" in answer and "nothing changed" in answer
    nothing_ran(bot)
    assert mlflow_server.alias(model, "champion") == bad


def test_a_confirmation_whose_alias_moved_since_the_preview_is_refused(
        guarded_bot, slack, mlflow_server):  # noqa: F811
    bot = guarded_bot
    model = model_name()
    _, bad = versions(mlflow_server, model, 2)
    value = confirm_value(bot, slack, model)
    rolled_forward = mlflow_server.create_version(model)
    mlflow_server.set_alias_outside_bot(model, "champion", rolled_forward)  # after the preview
    answer = answer_to(bot, slack, press(bot, slack, "rollback_confirm", value, ON_CALL))
    assert "the alias moved since the preview" in answer
    assert f"serves v{rolled_forward} now; the preview showed v{bad}" in answer
    nothing_ran(bot)
    assert mlflow_server.alias(model, "champion") == rolled_forward


def test_a_rollback_interrupted_by_a_crash_is_marked_interrupted_and_never_resumed(
        guarded_bot, slack, mlflow_server, prometheus_server):  # noqa: F811
    bot = guarded_bot
    model = model_name()
    good, bad = versions(mlflow_server, model, 2)
    # Unhealthy after the rollback too: the run is still waiting for health when killed.
    prometheus_server.metrics.models[(model, "production")] = ModelHealth(error_ratio=0.5)
    assert bot.post("alertmanager", alert_for(model)).status_code == 202
    bot.until(lambda: bot.rows("SELECT id FROM incident WHERE slack_ts IS NOT NULL"),
              what="the incident message")
    ((incident_id,),) = bot.rows("SELECT id FROM incident")
    preview = answer_to(bot, slack, press(bot, slack, "incident_rollback", str(incident_id),
                                          ON_CALL))
    assert f"v{bad} → v{good}" in preview
    ((value,),) = bot.rows("SELECT id FROM rollbackconfirmation")
    assert "Rolling back" in answer_to(bot, slack, press(bot, slack, "rollback_confirm", value,
                                                         ON_CALL))
    bot.until(lambda: bot.rows(
        "SELECT s.id FROM stepresult s JOIN runbookrun r ON r.id = s.run_id "
        "WHERE r.purpose = 'rollback' AND s.name = 'set_alias' AND s.status = 'passed'"),
        timeout=60, what="the rollback's set_alias step")
    bot.kill()
    assert mlflow_server.alias(model, "champion") == good
    rolled_forward = mlflow_server.create_version(model)  # someone rolls forward meanwhile
    mlflow_server.set_alias_outside_bot(model, "champion", rolled_forward)

    bot.start()
    bot.until(lambda: bot.rows("SELECT id FROM runbookrun WHERE purpose = 'rollback' "
                               "AND status = 'interrupted'"), timeout=60, what="interrupted")
    (entry,) = bot.rows("SELECT actor, detail FROM timelineentry "
                        "WHERE kind = 'rollback_interrupted'")
    assert "interrupted" in entry.detail and "new preview and confirmation" in entry.detail
    assert bot.rows("SELECT model FROM rollbacklock") == []
    assert mlflow_server.alias(model, "champion") == rolled_forward  # set_alias not re-run
    (step,) = bot.rows("SELECT s.id FROM stepresult s JOIN runbookrun r ON r.id = s.run_id "
                       "WHERE r.purpose = 'rollback' AND s.name = 'set_alias'")
    bot.until(bot.outbox_settled, timeout=30, what="the thread reply")
    (message,) = slack.top_level_messages()
    thread = json.dumps(slack.thread(message["channel"], message["ts"]))
    assert "was interrupted" in thread and "new preview and confirmation" in thread
    # Runs of this model can be previewed and confirmed again: the lock is free.
    assert f"v{rolled_forward} →" in answer_to(bot, slack, press(
        bot, slack, "incident_rollback", str(incident_id), ON_CALL))
