"""`oncall-bot config check`, the checks `serve` runs at start, `routes test`, the log
format and start-up failures (issue 14 items 2 and 3), through the real command line."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import EXAMPLES, BotProcess, free_port

ROOT = Path(__file__).resolve().parents[2]

BROKEN = """\
version: 1
teams:
  ds-churn:
    slack_group: S0CHURNDS
    pagerduty_routing_key_env: CHURN_PAGERDUTY_ROUTING_KEY
handoff: {cron: "99 9 * * 1-5", timezone: Europe/London}
pulse: {cron: "0 10 32 * *", timezone: Europe/Berlin, channel: "#ml-pulse"}
routes:
  - name: churn
    matchers: ['model="churn"']
    tier: L1
    team: ds-churn
    runbook: error-rate-hihg
  - name: everything
    tier: L0
  - name: never
    matchers: ['severity="critical"']
    tier: L1
  - name: default
    tier: record
"""


def oncall_bot(*args: str, env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("SLACK_", "PAGERDUTY_", "ALERT_", "ONCALL_", "CHURN_"))}
    environment["PYTHONPATH"] = str(ROOT)  # this checkout's bot, whatever the working directory
    return subprocess.run([sys.executable, "-m", "bot", *args], env={**environment, **env},
                          capture_output=True, text=True, timeout=60, cwd=cwd)


def _env(tmp_path: Path, routing: str, **more: str) -> dict[str, str]:
    path = tmp_path / "routing.yaml"
    path.write_text(routing)
    return {"DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "ONCALL_CONFIG": str(path),
            "ONCALL_RUNBOOKS": str(ROOT / "runbooks"), **more}


def test_config_check_names_each_bad_configuration(tmp_path):
    env = _env(tmp_path, BROKEN)
    result = oncall_bot("config", "check", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    source = env["ONCALL_CONFIG"]
    errors = result.stderr.splitlines()
    assert any(line.startswith(f"error: {source}: routes[0].runbook: no runbook named 'error-rate-hihg'")
               for line in errors), errors
    assert any(f"{source}: handoff.cron: '99 9 * * 1-5' is not a valid cron" in line for line in errors)
    assert any(f"{source}: routes[2]: route 'never' can never be reached: routes[1] ('everything')" in line
               for line in errors), errors
    assert any("routes[3]: route 'default' can never be reached" in line for line in errors)
    assert any(f"{source}: pulse.cron: '0 10 32 * *' is not a valid cron" in line
               for line in errors), errors
    assert len(errors) == 5, errors
    assert (f"warning: {source}: teams.ds-churn.pagerduty_routing_key_env: "
            "CHURN_PAGERDUTY_ROUTING_KEY is not set: escalation mentions Slack group S0CHURNDS") in result.stdout
    assert "Traceback" not in result.stderr

    # The same errors stop serve before it listens: exit 2, each named.
    served = oncall_bot("serve", "--port", str(free_port()), env=env)
    assert served.returncode == 2 and "routes[0].runbook" in served.stderr
    assert "handoff.cron" in served.stderr and "Traceback" not in served.stderr


def test_a_sound_configuration_passes_and_a_set_key_silences_the_warning(tmp_path):
    sound = BROKEN.replace('"99 9', '"0 9').replace('"0 10 32', '"0 10 1').replace(
        "hihg", "high").replace(
        "  - name: everything\n    tier: L0\n", "")
    result = oncall_bot("config", "check", env=_env(tmp_path, sound, CHURN_PAGERDUTY_ROUTING_KEY="k" * 32))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s), 0 warning(s)" in result.stdout


def test_config_check_online_names_services_that_do_not_answer(tmp_path, slack):
    closed = free_port()
    env = _env(tmp_path, "version: 1\nroutes: [{name: default, tier: L0}]\n",
               SLACK_BOT_TOKEN="xoxb-wrong", SLACK_API_URL=slack.base_url,
               PROMETHEUS_URL=f"http://127.0.0.1:{closed}")
    result = oncall_bot("config", "check", "--online", env=env)
    assert result.returncode == 0, result.stderr  # warnings only
    assert "warning: environment: SLACK_BOT_TOKEN: Slack auth.test: refused the token (invalid_auth)" in result.stdout
    assert "warning: environment: PROMETHEUS_URL: Prometheus did not answer: ConnectError" in result.stdout
    assert "xoxb-wrong" not in result.stdout + result.stderr

    env["SLACK_BOT_TOKEN"] = slack.token
    del env["PROMETHEUS_URL"]
    answered = oncall_bot("config", "check", "--online", env=env)
    assert "SLACK_BOT_TOKEN" not in answered.stdout, answered.stdout


def test_routes_test_shows_the_runbook_that_would_run_and_the_silence(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "ONCALL_RUNBOOKS": str(ROOT / "runbooks")}
    payload = EXAMPLES / "alertmanager-firing.json"
    before = oncall_bot("routes", "test", "--payload", str(payload), env=env)
    assert before.returncode == 0, before.stderr
    # The default route names no runbook; the runbook's own matchers select it.
    assert "runbook: error-rate-high (its matchers fit)" in before.stdout
    assert "silence: none" in before.stdout

    added = oncall_bot("silence", "add", 'model="churn"', "--for", "1h", env=env)
    assert added.returncode == 0, added.stderr
    after = oncall_bot("routes", "test", "--payload", str(payload), env=env)
    assert "silence: #1: recorded, not paged or posted" in after.stdout

    grafana = tmp_path / "grafana.json"
    grafana.write_text(json.dumps({"nonsense": True}))
    refused = oncall_bot("routes", "test", "--payload", str(grafana), env=env)
    assert refused.returncode == 2 and "not a payload the bot reads" in refused.stderr


def test_an_unreachable_database_is_one_line_and_exit_2(tmp_path):
    url = f"postgres://oncall:s3cret-pw@127.0.0.1:{free_port()}/oncall"
    result = oncall_bot("serve", "--port", str(free_port()), env={"DATABASE_URL": url}, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == ("oncall-bot: database unreachable at "
                         f"postgresql://oncall:***@127.0.0.1:{url.rsplit(':', 1)[1].split('/')[0]}"
                         "/oncall: connection refused"), result.stderr
    assert "s3cret-pw" not in result.stderr and "Traceback" not in result.stderr


def test_postgres_scheme_is_accepted(database_url):
    if not database_url.startswith("postgresql://"):
        pytest.skip("PostgreSQL only")
    result = oncall_bot("db", "upgrade", env={
        "DATABASE_URL": "postgres://" + database_url.removeprefix("postgresql://")})
    assert result.returncode == 0, result.stderr


def test_logs_are_json_lines_with_request_ids_and_no_secrets(bot_env, tmp_path, pagerduty):
    bot = BotProcess({**bot_env, "ACCESS_LOG": "true"}, log_path=tmp_path / "bot.log",
                     token=bot_env["ALERT_WEBHOOK_TOKEN"])
    bot.start()
    pagerduty.fail("/v2/enqueue", status=500)  # the page is retried: a log line about a delivery
    try:
        response = bot.http.get("/readyz?token=hunter2", headers={"X-Request-ID": "req-42"})
        assert response.headers["x-request-id"] == "req-42"
        assert bot.post("alertmanager", json.loads((EXAMPLES / "alertmanager-firing.json").read_text())
                        ).status_code == 202
        bot.until(bot.outbox_settled, what="the deliveries")
    finally:
        bot.stop()
    records = [json.loads(line) for line in bot.log().splitlines()]  # every line is JSON
    assert {"time", "level", "logger", "message"} <= set(records[0])
    loggers = {r["logger"] for r in records}
    assert "uvicorn" in loggers  # uvicorn's own lines go through the same formatter
    access = [r for r in records if r["logger"] == "oncall_bot.access"]
    assert any(r["path"] == "/readyz" and r["request_id"] == "req-42" and r["status"] == 200
               for r in access), access
    assert any(r["path"] == "/webhooks/alertmanager" and r["status"] == 202 for r in access)
    (retried,) = [r for r in records if "will be retried" in r["message"]]
    (page,) = bot_rows = [(row.id, row.incident_id) for row in bot.rows(
        "SELECT id, incident_id FROM delivery WHERE target = 'pagerduty'")]
    assert (retried["delivery_id"], retried["incident_id"]) == page, bot_rows
    text = bot.log()
    assert "hunter2" not in text and bot_env["ALERT_WEBHOOK_TOKEN"] not in text
    assert bot_env["SLACK_BOT_TOKEN"] not in text


def test_a_failure_while_starting_is_one_line_and_exit_2(tmp_path):
    """A database the migrations cannot apply to (a table already there, unstamped) fails
    inside the app's start-up: one line that names it, no traceback, exit 2."""
    path = tmp_path / "taken.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE incident (id INTEGER PRIMARY KEY)")
    token = "alert-token-that-must-not-show"
    result = oncall_bot("serve", "--port", str(free_port()), cwd=tmp_path, env={
        "DATABASE_URL": f"sqlite:///{path}", "ALERT_WEBHOOK_TOKEN": token, "LOG_FORMAT": "text"})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and token not in result.stderr
    failed = [line for line in result.stderr.splitlines() if "start-up failed" in line]
    assert len(failed) == 1, result.stderr
    assert "OperationalError: table incident already exists" in failed[0]


def test_a_port_already_taken_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = oncall_bot("serve", "--port", str(port), cwd=tmp_path, env={
            "DATABASE_URL": f"sqlite:///{tmp_path}/bot.db", "LOG_FORMAT": "text"})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "address already in use" in result.stderr, result.stderr
