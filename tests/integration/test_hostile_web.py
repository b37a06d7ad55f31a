"""Hostile requests to the bot's HTTP edges (issue 10, items 1, 7, 9, 10, 11).

Each test sends the attacker's request over real HTTP to the running bot and
checks both the answer and that nothing else happened: database, Slack,
PagerDuty, and no request to the canary.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.harness import BotProcess, example, free_port, wait_for
from tests.standins.signing import (
    pagerduty_headers,
    pagerduty_webhook,
    slack_headers,
    slash_command_body,
)

SIGNING_SECRET = "slack-signing-secret-for-tests"
PD_WEBHOOK_SECRET = "pagerduty-webhook-secret-for-tests"


def _start(env: dict[str, str], tmp_path: Path, token: str | None) -> BotProcess:
    bot = BotProcess(env, log_path=tmp_path / "bot.log", token=token)
    bot.start()
    return bot


@pytest.fixture
def full_bot(bot_env, tmp_path):
    """The bot with Slack commands and PagerDuty webhooks enabled."""
    bot = _start({**bot_env, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                  "PAGERDUTY_WEBHOOK_SECRET": PD_WEBHOOK_SECRET}, tmp_path,
                 bot_env["ALERT_WEBHOOK_TOKEN"])
    yield bot
    bot.stop()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# -- 1. /slack/events reads a bounded body --------------------------------------------

def test_a_64_mib_unsigned_chunked_post_to_slack_events_is_refused_413_unread(
        full_bot, slack, pagerduty, canary):
    before = full_bot.snapshot()
    rss = _rss_kib(full_bot.process.pid)

    def chunks():  # no Content-Length: only reading tells the size
        for _ in range(64):
            yield b"x" * (1024 * 1024)

    try:
        response = full_bot.http.post("/slack/events", content=chunks(), headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 413, response.text
    except httpx.WriteError:  # the bot answered and closed before the client finished
        pass
    assert _rss_kib(full_bot.process.pid) - rss < 32 * 1024  # 64 MiB were never held
    assert full_bot.http.get("/healthz").status_code == 200
    # A normal signed request still works.
    body = slash_command_body("help", user_id="U0STRANGR")
    answer = full_bot.http.post("/slack/events", content=body,
                                headers=slack_headers(SIGNING_SECRET, body))
    assert answer.status_code == 200, answer.text
    # A declared Content-Length over the limit is refused before a byte is read,
    # and a body that is not UTF-8 is refused, not a 500.
    big = full_bot.http.post("/slack/events", content=b"x" * (1024 * 1024 + 1))
    assert big.status_code == 413
    garbage = b"\xff\xfe\xfd"
    assert full_bot.http.post("/slack/events", content=garbage,
                              headers=slack_headers(SIGNING_SECRET, garbage)).status_code == 400
    assert full_bot.snapshot() == before
    assert pagerduty.events == [] and canary.requests == []


# -- 7. PagerDuty webhook replay ------------------------------------------------------

def _signed_pd(bot, body: bytes, webhook_id: str | None = None) -> httpx.Response:
    return bot.http.post("/webhooks/pagerduty", content=body,
                         headers=pagerduty_headers(PD_WEBHOOK_SECRET, body,
                                                   webhook_id=webhook_id))


def test_a_signed_resolve_replayed_under_a_new_webhook_id_after_a_reopen_changes_nothing(
        full_bot, slack, pagerduty, canary):
    firing, resolved = example("alertmanager-firing.json"), example("alertmanager-resolved.json")
    assert full_bot.post("alertmanager", firing).status_code == 202
    full_bot.until(full_bot.outbox_settled, what="the page and the Slack message")
    ((key,),) = full_bot.rows("SELECT key FROM incident")
    resolve = json.dumps(pagerduty_webhook("incident.resolved", key, "resolved")).encode()
    assert _signed_pd(full_bot, resolve, "W-original").status_code == 202
    assert full_bot.rows("SELECT state FROM incident")[0].state == "resolved"
    # The alert resolves and fires again: the incident reopens.
    assert full_bot.post("alertmanager", resolved).status_code == 202
    assert full_bot.post("alertmanager", firing).status_code == 202
    full_bot.until(full_bot.outbox_settled, what="the reopen's deliveries")
    assert full_bot.rows("SELECT state FROM incident")[0].state == "triggered"
    before, pages, posts = full_bot.snapshot(), len(pagerduty.events_for(key)), len(slack.calls())

    replay = _signed_pd(full_bot, resolve, "W-new-id")
    assert replay.status_code == 202, replay.text
    # The same event under its own id too, and an older event never applied before.
    assert _signed_pd(full_bot, resolve, "W-original").status_code == 202
    stale = json.dumps(pagerduty_webhook("incident.acknowledged", key, "acknowledged",
                                         occurred_at="2020-01-01T00:00:00.000Z")).encode()
    answer = _signed_pd(full_bot, stale)
    assert answer.status_code == 202 and "before" in answer.text

    full_bot.until(full_bot.outbox_settled, what="nothing to deliver")
    assert full_bot.rows("SELECT state FROM incident")[0].state == "triggered"
    assert full_bot.snapshot() == before
    assert len(pagerduty.events_for(key)) == pages and len(slack.calls()) == posts
    assert canary.requests == []


# -- 9. Open intake by default ---------------------------------------------------------

def _serve(tmp_path: Path, host: str, port: int | None = None,
           **env: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("SLACK_", "PAGERDUTY_", "ALERT_", "ONCALL_"))}
    environment.update({"DATABASE_URL": f"sqlite:///{tmp_path / 'oncall.db'}", **env})
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", "--host", host, "--port", str(port or free_port())],
        env=environment, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def test_serve_on_a_public_address_without_alert_webhook_token_refuses_to_start(tmp_path):
    process = _serve(tmp_path, "0.0.0.0")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2, output
    assert "ALERT_WEBHOOK_TOKEN" in output and "Traceback" not in output
    assert not (tmp_path / "oncall.db").exists()  # it stopped before touching anything


def test_more_than_two_alert_webhook_tokens_stop_the_process_naming_the_variable(tmp_path):
    process = _serve(tmp_path, "127.0.0.1", ALERT_WEBHOOK_TOKEN="one,two,three")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2 and "ALERT_WEBHOOK_TOKEN" in output, output
    assert "one" not in output.replace("one token", "")  # never the tokens themselves


def test_serve_on_a_public_address_starts_with_the_explicit_opt_in(tmp_path):
    port = free_port()
    process = _serve(tmp_path, "0.0.0.0", port, ALERT_WEBHOOK_ALLOW_UNAUTHENTICATED="true")

    def answering() -> bool:
        if process.poll() is not None:
            return True
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        # Serving, not merely started: the warning is printed before the port is bound.
        wait_for(answering, timeout=60, what="the bot to answer")
        assert process.poll() is None
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "ALERT_WEBHOOK_TOKEN" in output  # warned


def test_two_alert_webhook_tokens_are_both_accepted_and_a_third_is_refused(bot_env, tmp_path):
    bot = _start({**bot_env, "ALERT_WEBHOOK_TOKEN": "old-token, new-token"}, tmp_path,
                 "new-token")
    try:
        body = example("alertmanager-firing.json")
        assert bot.post("alertmanager", body, token="old-token").status_code == 202
        assert bot.post("generic", example("generic-firing.json"),
                        token="new-token").status_code == 202
        bot.until(bot.outbox_settled, what="the deliveries")
        before = bot.snapshot()
        for wrong in ("other-token", "old-token, new-token", "old-token,new-token"):
            assert bot.post("grafana", body, token=wrong).status_code == 401
        assert bot.snapshot() == before
    finally:
        bot.stop()


# -- 10. Malformed input is never a 500 --------------------------------------------------

def _alert(**labels: str) -> dict:
    alert = copy.deepcopy(example("alertmanager-firing.json"))
    alert["alerts"][0]["labels"].update(labels)
    return alert


def _occurrences(bot) -> list:
    return bot.rows("SELECT fingerprint, labels, annotations FROM alertoccurrence ORDER BY id")


def _labels(row) -> dict:
    return row.labels if isinstance(row.labels, dict) else json.loads(row.labels)


def test_a_body_nested_past_the_limit_is_refused_400_not_500(bot, canary):
    before = bot.snapshot()
    for source in ("alertmanager", "grafana", "generic"):
        for deep in (b"[" * 100_000 + b"]" * 100_000,
                     b'{"version": "4", "alerts": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001):
            response = bot.post(source, None, raw=deep)
            assert response.status_code == 400, response.text
            assert "nested" in response.json()["error"]
    # Brackets inside strings are not nesting.
    assert bot.post("alertmanager", _alert(query="[" * 1000)).status_code == 202
    assert bot.snapshot()["incident"] != before["incident"]
    assert canary.requests == []


def test_a_lone_surrogate_in_a_label_is_replaced_and_the_alert_kept(bot):
    raw = json.dumps(_alert(model="churn\ud800x")).encode()  # json.dumps writes "\\ud800"
    assert b"\\ud800" in raw
    response = bot.post("alertmanager", None, raw=raw)
    assert response.status_code == 202, response.text
    (row,) = _occurrences(bot)
    assert _labels(row)["model"] == "churn\ufffdx"
    assert bot.rows("SELECT model FROM incident")[0].model == "churn\ufffdx"


def test_a_nul_character_anywhere_is_removed_and_the_alert_kept(bot):
    doc = _alert(model="ch\u0000urn", **{"na\u0000me": "v"})
    doc["alerts"][0]["annotations"]["summary"] = "sum\u0000mary"
    doc["alerts"][0]["fingerprint"] = "1cbf\u000045ffda1b28e6"
    response = bot.post("alertmanager", doc)
    assert response.status_code == 202, response.text
    (row,) = _occurrences(bot)
    assert row.fingerprint == "1cbf45ffda1b28e6"
    assert _labels(row)["model"] == "churn" and _labels(row)["name"] == "v"
    assert "\u0000" not in json.dumps(bot.snapshot(), default=str)


def test_a_fingerprint_over_128_characters_is_hashed_and_the_alert_kept(bot):
    long = "f" * 5000
    doc = _alert()
    doc["alerts"][0]["fingerprint"] = long
    response = bot.post("alertmanager", doc)
    assert response.status_code == 202, response.text
    (row,) = _occurrences(bot)
    assert len(row.fingerprint) <= 128
    assert row.fingerprint.endswith(hashlib.sha256(long.encode()).hexdigest())
    # The same long fingerprint is the same alert: a repeat, not a second occurrence.
    assert bot.post("alertmanager", doc).status_code == 202
    assert len(_occurrences(bot)) == 1


def test_a_100000_character_label_is_stored_whole_and_the_page_stays_within_limits(
        bot, pagerduty):
    rng = random.Random(10)
    value = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzÄ€😀<>&|") for _ in range(100_000))
    doc = _alert(model=value, job=value, environment=value)
    doc["alerts"][0]["annotations"]["summary"] = value
    doc["alerts"][0]["generatorURL"] = "https://prometheus.example.com/" + value
    response = bot.post("alertmanager", doc)
    assert response.status_code == 202, response.text
    (row,) = _occurrences(bot)
    assert _labels(row)["model"] == value and _labels(row)["job"] == value
    bot.until(bot.outbox_settled, what="the page")
    ((key,),) = bot.rows("SELECT key FROM incident")
    (trigger,) = pagerduty.events_for(key)
    assert trigger["event"]["payload"]["summary"] and \
        len(trigger["event"]["payload"]["summary"]) <= 1024
    assert pagerduty.violations == []
    failed = bot.rows("SELECT target, last_error FROM delivery WHERE target = 'pagerduty' "
                      "AND state = 'failed'")
    assert failed == []


# -- 11. No framework docs pages ---------------------------------------------------------

def test_framework_docs_pages_are_not_served(bot):
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert bot.http.get(path).status_code == 404, path
