"""Attacker-written alert data, PagerDuty agent names and command arguments reach Slack
as text: no live mention or link, and no message Slack refuses (issue 10, items 2 and 10).

Everything goes over real HTTP to the running bot; what Slack would show is read from
the Slack stand-in, which validates Block Kit and message text limits as Slack does.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import WEBHOOK_TOKEN
from tests.harness import BotProcess
from tests.standins.signing import pagerduty_headers, pagerduty_webhook, slack_headers, slash_command_body
from tests.standins.slack import control_sequences

SIGNING_SECRET = "slack-signing-secret-for-tests"
PD_WEBHOOK_SECRET = "pagerduty-webhook-secret-for-tests"
PLATFORM = "U0PLATFRM"  # may silence
HUGE = "v" * 100_000
MODEL = "churn <!channel> <https://evil.example|open the runbook>"
SUMMARY = "<!here> churn is down: <https://evil.example|open the runbook> & <@U0EVIL1>"

ROUTES = f"""
version: 1
teams:
  ds-churn:
    slack_group: S0CHURNDS
permissions:
  users: [{PLATFORM}]
  groups: []
  on_call: false
routes:
  - name: page
    matchers: ['severity="critical"']
    tier: L1
    team: ds-churn
  - name: default
    tier: L0
"""


@pytest.fixture
def hostile_bot(bot_env, tmp_path: Path, slack):
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    slack.add_user(PLATFORM, "grace", "grace@example.com")
    env = {**bot_env, "ONCALL_CONFIG": str(routes), "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "PAGERDUTY_WEBHOOK_SECRET": PD_WEBHOOK_SECRET}
    bot = BotProcess(env, log_path=tmp_path / "bot.log", token=WEBHOOK_TOKEN)
    bot.start()
    yield bot
    bot.stop()


def alert(fingerprint: str, labels: dict, annotations: dict) -> dict:
    return {"status": "firing", "labels": labels, "annotations": annotations,
            "startsAt": "2026-05-04T09:12:31.483Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://prometheus.example.com/graph", "fingerprint": fingerprint}


def webhook(*alerts: dict) -> dict:
    common = {"alertname": "ModelDown"}
    return {"receiver": "ml-oncall-bot", "status": "firing", "alerts": list(alerts),
            "groupLabels": common, "commonLabels": common, "commonAnnotations": {},
            "externalURL": "https://alertmanager.example.com", "version": "4",
            "groupKey": '{}:{alertname="ModelDown"}', "truncatedAlerts": 0}


def live(text: str | None) -> list[str]:
    """Control sequences in `text` other than the mention the bot makes of PLATFORM."""
    return [s for s in control_sequences(text or "") if s != f"<@{PLATFORM}>"]


def mrkdwn_texts(blocks: list | None) -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return found


def everything_slack_received(slack) -> list[str]:
    """The text and every mrkdwn block text of every message and answer, as last sent."""
    texts = []
    for channel in slack.messages.values():
        for message in channel.values():
            texts += [message["text"], *mrkdwn_texts(message["blocks"])]
    for body in slack.responses():
        texts += [body.get("text", ""), *mrkdwn_texts(body.get("blocks"))]
    for request in slack.calls("chat.postMessage") + slack.calls("chat.update"):
        texts += [request.body.get("text", ""), *mrkdwn_texts(request.body.get("blocks"))]
    return texts


def slash(bot, slack, text: str, user: str = PLATFORM) -> str:
    name = f"cmd-{time.monotonic_ns()}"
    body = slash_command_body(text, user_id=user, response_url=slack.response_url(name))
    response = bot.http.post("/slack/events", content=body,
                             headers=slack_headers(SIGNING_SECRET, body))
    assert response.status_code == 200, response.text
    if response.content:  # answered in the ack itself (usage errors)
        return response.json()["text"]
    return bot.until(lambda: slack.responses(name), what=f"the answer to /oncall {text}")[0]["text"]


def test_slack_control_sequences_and_a_100k_label_in_an_alert_reach_slack_as_text(
        hostile_bot, slack, canary):
    annotations = {"summary": SUMMARY, "description": "<!subteam^S123> " + HUGE,
                   "runbook_url": canary.url() + "|open the runbook",
                   "dashboard_url": "javascript:alert(1)",
                   "panel_url": "https://evil.example/<!channel>"}
    labels = {"alertname": "ModelDown", "model": MODEL, "model_version": HUGE,
              "environment": "<!everyone>", "severity": "warning"}
    first = alert("f1", labels, annotations)
    joined = alert("f2", {**labels, "instance": "<@U0EVIL1>" + HUGE}, annotations)
    assert hostile_bot.post("alertmanager", webhook(first)).status_code == 202
    hostile_bot.until(lambda: slack.top_level_messages(), what="the incident in Slack")
    assert hostile_bot.post("alertmanager", webhook(first, joined)).status_code == 202
    hostile_bot.until(hostile_bot.outbox_settled, what="the Slack message and its replies")

    assert slack.violations == []  # no invalid_blocks, no msg_too_long
    assert hostile_bot.rows("SELECT id FROM delivery WHERE state = 'failed'") == []
    (message,) = slack.top_level_messages()
    replies = slack.thread(message["channel"], message["ts"])
    assert any("Another alert joined" in r["text"] for r in replies)
    shown = json.dumps(message["blocks"])
    assert "churn &lt;!channel&gt; &lt;https://evil.example|open the runbook&gt;" in shown
    assert "&lt;!here&gt; churn is down" in message["text"]
    for text in everything_slack_received(slack):
        assert live(text) == [], text[:300]
    assert canary.requests == []


def test_hostile_agent_name_silence_matcher_and_note_reach_slack_as_text(hostile_bot, slack,
                                                                        pagerduty):
    doc = webhook(alert("p1", {"alertname": "ModelDown", "model": MODEL, "severity": "critical"},
                        {"summary": SUMMARY}))
    assert hostile_bot.post("alertmanager", doc).status_code == 202
    hostile_bot.until(hostile_bot.outbox_settled, what="the page and the Slack message")
    ((incident_id, key),) = hostile_bot.rows("SELECT id, key FROM incident")

    agent = "<!channel> <https://evil.example|Ada> " + "a" * 5000
    body = json.dumps(pagerduty_webhook("incident.acknowledged", key, "acknowledged",
                                        agent_name=agent)).encode()
    response = hostile_bot.http.post("/webhooks/pagerduty", content=body,
                                     headers=pagerduty_headers(PD_WEBHOOK_SECRET, body))
    assert response.status_code == 202, response.text

    answers = [
        slash(hostile_bot, slack, 'silence model="<!channel> <https://evil.example|x>" for=2h '
                                  "<!here> <https://evil.example|because>"),
        slash(hostile_bot, slack, "silences"),
        slash(hostile_bot, slack, f"note {incident_id} <!here> <https://evil.example|see this>"),
        slash(hostile_bot, slack, f"show {incident_id}"),
        slash(hostile_bot, slack, "list"),
        slash(hostile_bot, slack, "show <!channel>"),  # refused in the ack, echoing the argument
        slash(hostile_bot, slack, 'silence model=~"<!channel>[" for=1h'),
        slash(hostile_bot, slack, 'declare "<!here> <https://evil.example|x>" tier=L0'),
    ]
    hostile_bot.until(hostile_bot.outbox_settled, what="the thread replies")

    assert "&lt;!channel&gt; &lt;https://evil.example|x&gt;" in answers[0]
    assert "&lt;!channel&gt;" in answers[5]
    (message, *_) = slack.top_level_messages()
    replies = [r["text"] for r in slack.thread(message["channel"], message["ts"])]
    assert any(r.startswith("Acknowledged by &lt;!channel&gt; &lt;https://evil.example|Ada&gt;")
               for r in replies), replies
    assert any(r.startswith(f"Note from <@{PLATFORM}>: &lt;!here&gt;") for r in replies), replies
    for text in answers + everything_slack_received(slack):
        assert live(text) == [], text[:300]
    assert slack.violations == []
