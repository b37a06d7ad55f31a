"""Every bad input gets its status code, a message naming the problem, and changes nothing."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from tests.harness import BotProcess, example


@pytest.fixture
def seeded(bot):
    """A bot with one incident already recorded, so 'unchanged' is not trivially empty."""
    assert bot.post("alertmanager", example("alertmanager-firing.json")).status_code == 202
    bot.until(bot.outbox_settled, what="the page and the Slack message")
    return bot


def test_wrong_or_missing_token_is_refused(seeded):
    before = seeded.snapshot()
    for headers in ({"Authorization": "Bearer nope"}, {"Authorization": ""},
                    {"Authorization": "Basic " + seeded.token}):
        response = seeded.http.post("/webhooks/alertmanager", headers=headers,
                                    content=json.dumps(example("alertmanager-firing.json")))
        assert response.status_code == 401
        assert "Authorization" in response.json()["error"]
    assert seeded.snapshot() == before


@pytest.mark.parametrize(
    ("source", "body", "status", "names"),
    [
        ("alertmanager", b"{not json", 400, "not valid JSON"),
        ("alertmanager", b"\xff\xfe", 400, "not valid JSON"),
        ("alertmanager", b"[]", 422, "body"),
        ("alertmanager", json.dumps({**example("alertmanager-firing.json"), "version": "3"}),
         422, "version"),
        ("alertmanager", json.dumps({"version": "4", "alerts": [{"status": "burning",
                                                                  "labels": {"a": "b"}}]}),
         422, "alerts[0].status"),
        ("alertmanager", json.dumps({"version": "4", "alerts": [{"status": "firing",
                                                                  "labels": {"a": 7}}]}),
         422, "alerts[0].labels"),
        ("grafana", json.dumps(example("alertmanager-firing.json")), 422, "version"),
        ("generic", json.dumps({"alertname": "Drift"}), 422, "model"),
    ],
)
def test_malformed_payloads_are_refused_naming_the_problem(seeded, source, body, status, names):
    before = seeded.snapshot()
    raw = body if isinstance(body, bytes) else body.encode()
    response = seeded.post(source, None, raw=raw)
    assert response.status_code == status, response.text
    assert names in json.dumps(response.json())
    assert seeded.snapshot() == before


def test_oversized_bodies_are_refused_whether_declared_or_streamed(seeded):
    before = seeded.snapshot()
    huge = b'{"version": "4", "alerts": [' + b" " * (5 * 1024 * 1024) + b"]}"
    response = seeded.post("alertmanager", None, raw=huge)
    assert response.status_code == 413 and "limit" in response.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(6):
            yield b" " * (1024 * 1024)

    response = seeded.http.post("/webhooks/alertmanager", content=chunks(),
                                headers={"Authorization": f"Bearer {seeded.token}"})
    assert response.status_code == 413
    assert seeded.snapshot() == before


def _hold_write_lock(database_url: str):
    """Take the database's write lock the way another busy writer would."""
    if database_url.startswith("sqlite"):
        connection = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=1,
                                     isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")
        return connection.close
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    connection = engine.connect()
    connection.execute(text("LOCK TABLE incident IN ACCESS EXCLUSIVE MODE"))

    def release():
        connection.rollback()
        connection.close()
        engine.dispose()

    return release


def test_a_busy_database_answers_503_so_alertmanager_retries(bot_env, tmp_path, database_url):
    bot = BotProcess({**bot_env, "DATABASE_LOCK_TIMEOUT_SECONDS": "1"},
                     log_path=tmp_path / "bot.log", token=bot_env["ALERT_WEBHOOK_TOKEN"])
    bot.start()
    try:
        assert bot.post("alertmanager", example("alertmanager-firing.json")).status_code == 202
        bot.until(bot.outbox_settled, what="the page and the Slack message")
        before = bot.snapshot()
        release = _hold_write_lock(database_url)
        try:
            response = bot.post("alertmanager", example("alertmanager-resolved.json"))
        finally:
            release()
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"]
        assert bot.snapshot() == before
        # Alertmanager's retry, once the database is free again, goes through.
        assert bot.post("alertmanager", example("alertmanager-resolved.json")).status_code == 202
        assert bot.rows("SELECT state FROM incident")[0].state == "resolved"
    finally:
        bot.stop()


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", "db", "upgrade"], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PAGERDUTY_EVENTS_URL", "http://events.example"),
        ("DATABASE_URL", "mysql://nope"),
        ("OUTBOX_BACKOFF_BASE_SECONDS", "-1"),
        ("ONCALL_CONFIG", "/nonexistent/routes.yaml"),
        ("ONCALL_CA_BUNDLE", "/etc/hostname"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_setting_stops_the_process_naming_the_variable(variable, value, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
           variable: value}
    result = _start(env)
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_routing_file_stops_the_process_naming_the_key(tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text("version: 1\nroutes:\n  - name: x\n    tier: L9\n")
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
           "ONCALL_CONFIG": str(routes)}
    result = subprocess.run([sys.executable, "-m", "bot", "routes", "test", "severity=critical"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "routes.0.tier" in result.stderr and str(routes) in result.stderr
