"""The command line: routes test, silences (recorded, not paged), db upgrade."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.harness import example


def oncall_bot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env}
    return subprocess.run([sys.executable, "-m", "bot", *args], env=environment,
                          capture_output=True, text=True, timeout=60)


def test_routes_test_tells_where_an_alert_would_go(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/x.db", "SLACK_ALERT_CHANNEL": "#models"}
    result = oncall_bot("routes", "test", "severity=critical", "alertname=Drift", "model=churn",
                        env=env)
    assert result.returncode == 0, result.stderr
    assert "route:   page" in result.stdout and "tier:    L1" in result.stdout
    assert "channel: #models" in result.stdout
    assert "group:   alertname=Drift,model=churn,environment=" in result.stdout
    assert oncall_bot("routes", "test", "nonsense", env=env).returncode == 2


def test_silenced_alerts_are_recorded_but_neither_paged_nor_posted(bot, bot_env, pagerduty,
                                                                   slack):
    added = oncall_bot("silence", "add", 'model="churn"', "environment=~prod.*", "--for", "1h",
                       "--comment", "retraining", "--by", "ada", env=bot_env)
    assert added.returncode == 0, added.stderr
    assert "silence #1" in added.stdout

    assert bot.post("alertmanager", example("alertmanager-firing.json")).status_code == 202
    ((silence_id, tier),) = bot.rows("SELECT silence_id, tier FROM incident")
    assert (silence_id, tier) == (1, "L1")
    assert bot.rows("SELECT id FROM delivery") == []
    kinds = [r.kind for r in bot.rows("SELECT kind FROM timelineentry ORDER BY id")]
    assert kinds == ["opened", "silenced"]

    listed = oncall_bot("silence", "list", env=bot_env)
    assert "#1" in listed.stdout and "retraining" in listed.stdout and "ada" in listed.stdout
    assert oncall_bot("silence", "expire", "1", env=bot_env).returncode == 0
    assert oncall_bot("silence", "expire", "1", env=bot_env).returncode == 1
    assert oncall_bot("silence", "list", env=bot_env).stdout == "no active silences\n"


def test_a_bad_silence_matcher_is_refused(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    result = oncall_bot("silence", "add", "model", env=env)
    assert result.returncode == 2 and "matcher 'model'" in result.stderr


def test_db_upgrade_is_idempotent(database_url):
    for _ in range(2):
        result = oncall_bot("db", "upgrade", env={"DATABASE_URL": database_url})
        assert result.returncode == 0, result.stderr


def test_health_and_metrics(bot):
    assert bot.http.get("/healthz").json() == {"status": "ok"}
    assert bot.post("alertmanager", example("alertmanager-firing.json")).status_code == 202
    metrics = bot.http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'oncall_alerts_received_total{source="alertmanager",status="firing"} 1.0' in text
    assert 'oncall_incidents{state="triggered"} 1.0' in text
    assert "oncall_ingest_seconds_bucket" in text
    assert 'oncall_deliveries{state="pending"' in text
