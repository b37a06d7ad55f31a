"""The outbox: nothing owed is lost or sent twice, through outages, rate limits and crashes."""

from __future__ import annotations

import os
import time

import pytest

from tests.harness import BotProcess, wait_for

# The scenario is a one-minute PagerDuty outage; OUTAGE_SECONDS shortens it
# for quick local runs. CI runs the full minute.
OUTAGE_SECONDS = float(os.environ.get("OUTAGE_SECONDS", "60"))


def _alert(name: str, status: str = "firing", severity: str = "critical") -> dict:
    return {
        "version": "4", "status": status, "receiver": "oncall-bot", "groupKey": name,
        "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.local",
        "alerts": [{
            "status": status, "fingerprint": f"fp-{name}",
            "labels": {"alertname": name, "model": "churn", "environment": "production",
                       "severity": severity},
            "annotations": {"summary": f"{name} on churn"},
            "startsAt": "2026-11-27T09:00:00Z",
            "endsAt": "2026-11-27T10:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.local/graph",
        }],
    }


def _keys(bot) -> list[str]:
    return [row.key for row in bot.rows("SELECT key FROM incident ORDER BY id")]


def _assert_each_paged_once(bot, pagerduty) -> None:
    for key in _keys(bot):
        assert [e["event"]["event_action"] for e in pagerduty.events_for(key)] == ["trigger"], key


def test_pagerduty_down_for_a_minute_loses_and_duplicates_nothing(bot, pagerduty, slack):
    pagerduty.down(status=500)
    started = time.monotonic()
    names = [f"Outage{i}" for i in range(5)]
    for name in names:
        assert bot.post("alertmanager", _alert(name)).status_code == 202
    # Incidents are recorded and Slack is told while PagerDuty is down.
    assert len(_keys(bot)) == 5
    wait_for(lambda: len(slack.top_level_messages()) == 5, what="Slack messages")
    bot.until(lambda: bot.rows("SELECT id FROM delivery WHERE target = 'pagerduty' "
                              "AND attempts >= 2"), what="retries during the outage")
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - started)))
    assert pagerduty.triggers() == []
    pagerduty.up()
    bot.until(bot.outbox_settled, timeout=30, what="the outbox to drain")
    _assert_each_paged_once(bot, pagerduty)
    assert pagerduty.violations == []


def test_pagerduty_outage_with_the_bot_killed_in_between(bot, pagerduty):
    pagerduty.down(status=500)
    for name in ("Crash1", "Crash2", "Crash3"):
        assert bot.post("alertmanager", _alert(name)).status_code == 202
    bot.until(lambda: bot.rows("SELECT id FROM delivery WHERE target = 'pagerduty' "
                              "AND attempts >= 1"), what="a failed attempt")
    bot.kill()
    pagerduty.up()
    assert pagerduty.triggers() == []
    bot.start()  # a new process on the same database: the outbox is all it has
    bot.until(bot.outbox_settled, timeout=30, what="the outbox to drain after restart")
    _assert_each_paged_once(bot, pagerduty)
    # Alerts resolve after the restart: the resolve follows its trigger, once.
    for name in ("Crash1", "Crash2", "Crash3"):
        assert bot.post("alertmanager", _alert(name, status="resolved")).status_code == 202
    bot.until(bot.outbox_settled, timeout=30, what="the resolves")
    for key in _keys(bot):
        assert [e["event"]["event_action"] for e in pagerduty.events_for(key)] == [
            "trigger", "resolve"]


def test_bot_killed_with_deliveries_owed_and_services_up_delivers_once(bot, pagerduty, slack):
    slack.down()
    assert bot.post("alertmanager", _alert("Owed")).status_code == 202
    # Killed once the page is recorded as sent (a kill between PagerDuty's 202 and
    # that record would resend it; the dedup_key makes PagerDuty fold the two).
    bot.until(lambda: bot.rows("SELECT id FROM delivery WHERE target = 'pagerduty' "
                               "AND state = 'sent'"), what="the page to be recorded")
    bot.kill()
    slack.up()
    bot.start()
    bot.until(bot.outbox_settled, timeout=30, what="the Slack message after restart")
    assert len(slack.top_level_messages()) == 1
    _assert_each_paged_once(bot, pagerduty)


def test_slack_429_retry_after_is_honoured(bot, slack):
    slack.fail("chat.postMessage", status=429, retry_after=2)
    assert bot.post("alertmanager", _alert("Limited", severity="warning")).status_code == 202
    wait_for(lambda: slack.top_level_messages(), timeout=15, what="the Slack message")
    (refused,) = slack.failed_requests
    (posted,) = slack.calls("chat.postMessage")
    assert posted.time - refused.time >= 2.0
    assert len(slack.top_level_messages()) == 1


def test_pagerduty_429_holds_back_and_then_delivers(bot, pagerduty):
    pagerduty.fail("/v2/enqueue", status=429, retry_after=1, times=2)
    for name in ("Busy1", "Busy2"):
        assert bot.post("alertmanager", _alert(name)).status_code == 202
    bot.until(bot.outbox_settled, timeout=20, what="the pages")
    _assert_each_paged_once(bot, pagerduty)


def test_a_hung_pagerduty_call_is_retried_and_dedup_key_keeps_one_page(bot, pagerduty):
    # The stand-in answers after 4 s, beyond the bot's 2 s timeout; the first event
    # still reaches PagerDuty, so the retry is a second event with the same dedup_key.
    pagerduty.fail("/v2/enqueue", hang=4)
    assert bot.post("alertmanager", _alert("Hung")).status_code == 202
    bot.until(bot.outbox_settled, timeout=20, what="the page")
    pagerduty.wait_idle()
    (key,) = _keys(bot)
    assert {e["event"]["event_action"] for e in pagerduty.events_for(key)} == {"trigger"}
    assert len(pagerduty.incidents) == 1  # PagerDuty folded both into one incident


def test_a_refused_page_is_marked_failed_and_shown_on_the_timeline(bot, pagerduty):
    pagerduty.fail("/v2/enqueue", status=400)
    assert bot.post("alertmanager", _alert("Refused")).status_code == 202
    bot.until(lambda: bot.rows("SELECT id FROM delivery WHERE state = 'failed'"),
             what="the failed delivery")
    (entry,) = bot.rows("SELECT detail FROM timelineentry WHERE kind = 'delivery_failed'")
    assert "pagerduty trigger refused" in entry.detail and "400" in entry.detail
    metrics = bot.http.get("/metrics").text
    assert 'oncall_deliveries{state="failed",target="pagerduty"} 1.0' in metrics


def test_without_credentials_the_bot_still_records_and_says_what_is_off(database_url, tmp_path):
    bot = BotProcess({"DATABASE_URL": database_url}, log_path=tmp_path / "bot.log", token=None)
    bot.start()
    try:
        assert bot.http.post("/webhooks/alertmanager", json=_alert("Quiet")).status_code == 202
        assert len(_keys(bot)) == 1
        assert bot.rows("SELECT id FROM delivery") == []
        log = bot.log()
        assert "Slack messages are disabled: SLACK_BOT_TOKEN is not set" in log
        assert "PagerDuty pages are disabled: PAGERDUTY_ROUTING_KEY is not set" in log
        (entry,) = bot.rows("SELECT detail FROM timelineentry WHERE kind = 'page_skipped'")
        assert "not configured" in entry.detail
    finally:
        bot.stop()


@pytest.mark.parametrize("secret_var", ["PAGERDUTY_ROUTING_KEY", "SLACK_BOT_TOKEN",
                                        "ALERT_WEBHOOK_TOKEN"])
def test_secrets_never_reach_the_log_or_the_database(bot, bot_env, pagerduty, secret_var):
    pagerduty.fail("/v2/enqueue", status=401)
    assert bot.post("alertmanager", _alert("Secret")).status_code == 202
    bot.until(bot.outbox_settled, what="the deliveries")
    secret = bot_env[secret_var]
    assert secret not in bot.log()
    assert secret not in repr(bot.snapshot())
