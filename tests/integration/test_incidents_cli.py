"""`oncall-bot incidents list|show` over the record the running bot keeps, and the
first ten minutes: runbooks that cannot work say so at start, their steps are skipped
with the reason, and every webhook leaves one log line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import BotProcess, example

ROOT = Path(__file__).resolve().parents[2]
CONTROLS = "\x1b]0;owned\x07\x1b[2J\r\x9b31m\u202e"


def oncall_bot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def quick_start_bot(bot_env, tmp_path):
    """The quick start's bot: the bundled runbooks, no PROMETHEUS_URL nor MLFLOW_TRACKING_URI."""
    if os.environ.get("PROMETHEUS_URL") or os.environ.get("MLFLOW_TRACKING_URI"):
        pytest.skip("PROMETHEUS_URL or MLFLOW_TRACKING_URI is set in the test environment")
    env = {**bot_env, "ONCALL_RUNBOOKS": str(ROOT / "runbooks"), "LOG_FORMAT": "json"}
    process = BotProcess(env, log_path=tmp_path / "bot.log", token=bot_env["ALERT_WEBHOOK_TOKEN"])
    process.start()
    try:
        yield process
    finally:
        process.stop()


def finished_runs(bot: BotProcess) -> bool:
    return bool(bot.rows("SELECT id FROM runbookrun WHERE finished_at IS NOT NULL"))


def test_incidents_show_on_the_quick_start_explains_why_diagnostics_did_not_run(quick_start_bot, bot_env):
    bot = quick_start_bot
    assert "runbook error-rate-high needs MLFLOW_TRACKING_URI and PROMETHEUS_URL" in bot.log()
    assert bot.post("alertmanager", example("alertmanager-firing.json")).status_code == 202
    assert bot.post("alertmanager", example("alertmanager-firing.json"), token="wrong").status_code == 401
    assert bot.http.post("/webhooks/pagerduty", content=b"{}").status_code == 401  # no secret configured
    bot.until(lambda: finished_runs(bot), timeout=30, what="the diagnostics to finish")
    bot.until(lambda: bot.rows("SELECT id FROM timelineentry WHERE kind = 'diagnostics'"),
              what="the run's summary on the timeline")

    shown = oncall_bot("incidents", "show", "1", env=bot_env)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "what_changed [mlflow] skipped" in out
    assert "skipped: needs MLFLOW_TRACKING_URI, which is not set" in out
    assert "skipped: needs PROMETHEUS_URL, which is not set" in out
    assert "version_matches [python] skipped" in out and "step what_changed did not run" in out
    assert "undefined" not in out and "has no attribute" not in out
    assert "steps skipped: MLFLOW_TRACKING_URI, PROMETHEUS_URL not set" in out  # the timeline's summary
    assert "deliveries:" in out and "pagerduty" in out and "slack" in out

    as_json = json.loads(oncall_bot("incidents", "show", "1", "--format", "json", env=bot_env).stdout)
    (run,) = as_json["runs"]
    assert run["runbook"] == "error-rate-high"
    assert {s["name"]: s["status"] for s in run["steps"]}["error_rate_now"] == "skipped"

    listed = oncall_bot("incidents", "list", "--state", "triggered", "--model", "churn", "--since", "7d",
                        env=bot_env)
    assert listed.returncode == 0 and listed.stdout.startswith("#1  triggered"), listed.stdout + listed.stderr
    assert oncall_bot("incidents", "list", "--model", "fraud", env=bot_env).stdout == "no incidents match\n"
    assert [i["id"] for i in json.loads(oncall_bot("incidents", "list", "--format", "json",
                                                   env=bot_env).stdout)] == [1]
    assert oncall_bot("incidents", "show", "2", env=bot_env).returncode == 1

    lines = [json.loads(line) for line in bot.log().splitlines() if line.startswith("{")]
    webhooks = [(e["source"], e["status"], e.get("alerts"), e.get("opened"), e.get("reason"))
                for e in lines if e["logger"] == "bot.web.webhooks"]
    assert webhooks == [("alertmanager", 202, 1, [1], None),
                        ("alertmanager", 401, None, None,
                         "missing or wrong bearer token in the Authorization header"),
                        ("pagerduty", 401, None, None,
                         "PAGERDUTY_WEBHOOK_SECRET is not configured, so no webhook can be verified")]
    assert bot_env["ALERT_WEBHOOK_TOKEN"] not in bot.log()
    assert not [e for e in lines if e["logger"].startswith("alembic")]


def test_a_label_with_terminal_controls_cannot_rewrite_the_operators_terminal(bot, bot_env):
    alert = example("alertmanager-firing.json")
    alert["alerts"][0]["labels"]["model"] = "churn" + CONTROLS
    alert["alerts"][0]["annotations"]["summary"] = "error rate" + CONTROLS
    assert bot.post("alertmanager", alert).status_code == 202

    for args in (("incidents", "list"), ("incidents", "show", "1")):
        out = oncall_bot(*args, env=bot_env).stdout
        assert not any(c in out for c in "\x1b\x07\r\x9b\u202e"), repr(out)
        assert "churn\\x1b]0;owned\\x07\\x1b[2J\\x0d\\x9b31m\\u202e" in out
    raw = json.loads(oncall_bot("incidents", "show", "1", "--format", "json", env=bot_env).stdout)
    assert raw["labels"]["model"] == "churn" + CONTROLS  # JSON escapes them itself
