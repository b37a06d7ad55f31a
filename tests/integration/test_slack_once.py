"""One Slack message per incident across crashes and stops: posts carry message
metadata, a post whose answer was lost is found in the channel's history and adopted
instead of posted again, SIGTERM records what was sent before the process exits, and
Slack setup problems (a private channel the bot is not in, a missing scope) are said
once. Real bot processes on SQLite and PostgreSQL, the Slack and PagerDuty stand-ins."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.conftest import WEBHOOK_TOKEN
from tests.harness import BotProcess
from tests.standins.slack import BOT_USER_ID, SlackStandIn

CHANNEL = "#ml-alerts"


def _alert(name: str) -> dict:
    return {"version": "4", "status": "firing", "receiver": "oncall-bot",
            "groupKey": f'{{}}:{{alertname="{name}"}}',
            "alerts": [{"status": "firing", "labels": {"alertname": name, "severity": "critical",
                                                       "model": "churn"},
                        "annotations": {"summary": f"{name} fired"},
                        "startsAt": "2026-11-30T10:00:00Z", "fingerprint": f"fp-{name}"}]}


def _start(env: dict[str, str], tmp_path: Path, name: str = "bot.log") -> BotProcess:
    bot = BotProcess(env, log_path=tmp_path / name, token=WEBHOOK_TOKEN)
    bot.start()
    return bot


def _incident_messages(slack: SlackStandIn, incident_id: int) -> list[dict]:
    return [m for m in slack.top_level_messages()
            if (m.get("metadata") or {}).get("event_type") == "oncall_incident"
            and m["metadata"]["event_payload"].get("incident_id") == incident_id]


def test_incident_message_carries_metadata_and_the_bot_joins_the_channel(
        bot, slack, pagerduty):
    assert bot.post("alertmanager", _alert("Drift")).status_code == 202
    bot.until(bot.outbox_settled, timeout=15, what="the outbox")
    (incident,) = bot.rows("SELECT id, slack_ts FROM incident")
    (message,) = slack.top_level_messages()
    (delivery_id,) = [r.id for r in bot.rows(
        "SELECT id FROM delivery WHERE target = 'slack' AND action = 'sync' ORDER BY id")][:1]
    assert message["ts"] == incident.slack_ts
    assert message["metadata"] == {"event_type": "oncall_incident", "event_payload": {
        "incident_id": incident.id, "delivery_id": delivery_id}}
    channel = slack.channels[slack.channel_id(CHANNEL)]
    assert BOT_USER_ID in channel["members"]
    assert len(slack.calls("conversations.join")) == 1
    assert slack.calls("conversations.history") == []  # a first attempt just posts
    assert slack.violations == [] and pagerduty.violations == []


def test_post_accepted_but_unrecorded_is_found_in_history_and_adopted(
        bot_env, tmp_path, slack, pagerduty):
    """The issue's duplicate: Slack took the post, the bot died before recording it,
    and the restarted bot posted a second incident message with live buttons."""
    slack.stall("chat.postMessage")  # Slack posts it, the answer never arrives
    bot = _start(bot_env, tmp_path)
    try:
        assert bot.post("alertmanager", _alert("Drift")).status_code == 202
        bot.until(lambda: slack.top_level_messages(), timeout=15, what="the post taken")
        bot.kill()
        slack.release()
        (first,) = slack.top_level_messages()
        assert bot.rows("SELECT slack_ts FROM incident")[0].slack_ts is None  # unrecorded
        bot.start()  # PostgreSQL: the dead process's lease runs out first (3 timeouts + 5 s)
        bot.until(bot.outbox_settled, timeout=30, what="the outbox after the restart")
        (incident,) = bot.rows("SELECT id, slack_ts, slack_channel_id FROM incident")
        assert incident.slack_ts == first["ts"]
        assert incident.slack_channel_id == first["channel"]
        assert [m["ts"] for m in _incident_messages(slack, incident.id)] == [first["ts"]]
        assert len(slack.calls("chat.postMessage")) == 1
        history = slack.calls("conversations.history")
        assert history and all(r.query.get("include_all_metadata") for r in history)
        assert "adopted" in bot.log()
        assert slack.violations == [] and pagerduty.violations == []
    finally:
        slack.release()
        bot.stop()


def test_sigterm_during_delivery_records_the_outcomes_and_sends_nothing_again(
        bot_env, tmp_path, slack, pagerduty):
    """A graceful stop used to drop the outcomes still queued: those rows stayed
    pending, and the restarted bot sent them again."""
    slack.fail("chat.postMessage", hang=1.5)  # the post is in flight when SIGTERM comes
    bot = _start(bot_env, tmp_path)
    try:
        assert bot.post("alertmanager", _alert("Drift")).status_code == 202
        bot.until(lambda: bot.rows("SELECT id FROM delivery WHERE target = 'slack' "
                                   "AND first_attempt_at IS NOT NULL"),
                  timeout=15, what="the post in flight")
        assert bot.process is not None
        bot.process.send_signal(signal.SIGTERM)
        assert bot.process.wait(timeout=15) in (0, -signal.SIGTERM)  # uvicorn re-raises it
        assert "delivery outcomes recorded; 0 sends unfinished" in bot.log()
        assert bot.rows("SELECT id FROM delivery WHERE state = 'pending'") == []
        slack.wait_idle()
        posts = len(slack.calls("chat.postMessage"))
        triggers = len(pagerduty.triggers())
        bot.start()
        bot.post("alertmanager", {"version": "4", "status": "firing", "alerts": []})
        bot.until(bot.outbox_settled, timeout=15, what="the outbox after the restart")
        assert len(slack.calls("chat.postMessage")) == posts == 1
        assert len(pagerduty.triggers()) == triggers == 1
        assert slack.calls("conversations.history") == []  # nothing was left unknown
    finally:
        bot.stop()


def test_private_channel_the_bot_is_not_in_is_told_once(bot_env, tmp_path, slack, pagerduty):
    private = slack.add_channel("#private-ops", private=True)
    bot = _start({**bot_env, "SLACK_ALERT_CHANNEL": "#private-ops"}, tmp_path)
    try:
        for name in ("Drift", "Latency"):
            assert bot.post("alertmanager", _alert(name)).status_code == 202
        bot.until(bot.outbox_settled, timeout=15, what="the outbox")
        assert slack.top_level_messages() == []
        # Refused for good, not retried in a loop: one post per incident.
        assert len(slack.calls("chat.postMessage")) == 2
        refused = bot.rows("SELECT incident_id, detail FROM timelineentry "
                           "WHERE kind = 'delivery_failed' ORDER BY id")
        assert len(refused) == 2 and all("invite" in r.detail for r in refused)
        assert bot.log().count("the bot cannot post in #private-ops") == 1

        # Invited: the group's next change posts its message, after looking for one.
        slack.channels[private]["members"].add(BOT_USER_ID)
        again = _alert("Drift")
        again["alerts"][0]["fingerprint"] = "fp-Drift-2"
        assert bot.post("alertmanager", again).status_code == 202
        bot.until(bot.outbox_settled, timeout=15, what="the outbox after the invite")
        (message,) = slack.top_level_messages()
        assert message["metadata"]["event_type"] == "oncall_incident"
        assert len(slack.calls("conversations.history")) == 1
        assert slack.violations == [] and pagerduty.violations == []
    finally:
        bot.stop()


def test_missing_scope_is_on_the_timeline_naming_the_scope(bot_env, tmp_path, slack, pagerduty):
    """An app upgraded without reinstalling lacks the new scopes: join answers
    missing_scope, needed=channels:join."""
    slack.scopes.discard("channels:join")
    bot = _start(bot_env, tmp_path)
    try:
        for name in ("Drift", "Latency"):
            assert bot.post("alertmanager", _alert(name)).status_code == 202
        bot.until(bot.outbox_settled, timeout=15, what="the outbox")
        assert len(slack.top_level_messages()) == 2  # the messages themselves went out
        notes = bot.rows("SELECT detail FROM timelineentry WHERE kind = 'slack_setup'")
        assert len(notes) == 1 and "channels:join" in notes[0].detail
        assert bot.log().count("lacks the channels:join scope") == 1
        assert slack.violations == [] and pagerduty.violations == []
    finally:
        bot.stop()


QUICK_LOOK = """\
version: 1
name: quick-look
description: Diagnostics that need no outside service.
matchers: ['alertname="Drift"']
steps:
  - name: compare
    kind: python
    callable: "bot.runbooks.library:compare_versions"
    args: {reported: "1", serving: "1", model: "m"}
"""


def test_diagnostics_reply_accepted_but_unrecorded_is_found_in_the_thread(
        bot_env, tmp_path, slack, pagerduty):
    """The same for the thread reply that shows a diagnostics run: found with
    conversations.replies, adopted, and edited, not posted twice."""
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "quick-look.yaml").write_text(QUICK_LOOK)
    slack.stall("chat.postMessage", threaded=True)
    bot = _start({**bot_env, "ONCALL_RUNBOOKS": str(runbooks),
                  "PAGERDUTY_FROM_EMAIL": "oncall-bot@example.com"}, tmp_path)
    try:
        assert bot.post("alertmanager", _alert("Drift")).status_code == 202
        (incident,) = bot.until(lambda: bot.rows("SELECT id, slack_channel_id, slack_ts "
                                                 "FROM incident WHERE slack_ts IS NOT NULL"),
                                timeout=15, what="the incident message")
        bot.until(lambda: slack.thread(incident.slack_channel_id, incident.slack_ts),
                  timeout=15, what="the diagnostics reply taken")
        bot.kill()
        slack.release()
        (first,) = slack.thread(incident.slack_channel_id, incident.slack_ts)
        assert first["metadata"]["event_type"] == "oncall_run"
        bot.start()
        bot.until(bot.outbox_settled, timeout=30, what="the outbox after the restart")
        (reply,) = [m for m in slack.thread(incident.slack_channel_id, incident.slack_ts)
                    if m["metadata"]["event_type"] == "oncall_run"]
        assert reply["ts"] == first["ts"] and "passed" in json.dumps(reply["blocks"])
        assert bot.rows("SELECT slack_ts FROM runbookrun")[0].slack_ts == first["ts"]
        assert slack.calls("conversations.replies")
        assert len(slack.calls("chat.postMessage")) == 2  # the incident, the run: once each
        assert slack.violations == [] and pagerduty.violations == []
    finally:
        slack.release()
        bot.stop()
