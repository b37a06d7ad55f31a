"""Slack and PagerDuty both ways: slash commands, buttons, PagerDuty webhooks, permissions.

Every request is signed exactly as Slack and PagerDuty sign theirs; Slack's and
PagerDuty's answers come from the stand-ins over real HTTP.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import WEBHOOK_TOKEN
from tests.harness import BotProcess, example
from tests.standins.signing import (
    block_actions_body,
    pagerduty_headers,
    pagerduty_webhook,
    slack_headers,
    slash_command_body,
)

SIGNING_SECRET = "slack-signing-secret-for-tests"
PD_WEBHOOK_SECRET = "pagerduty-webhook-secret-for-tests"
TEAM_KEY = "TEAMKEY0123456789ABCDEFGHIJKLMNO"  # 32 characters, the churn team's own service

ON_CALL = "U0ONCALL1"  # Ada, on call in PagerDuty
PLATFORM = "U0PLATFRM"  # member of the platform Slack group
STRANGER = "U0STRANGR"  # anyone else
PLATFORM_GROUP = "S0PLATFORM"

ROUTES = f"""
version: 1
teams:
  ds-churn:
    slack_group: S0CHURNDS
    pagerduty_routing_key_env: CHURN_PAGERDUTY_ROUTING_KEY
  ds-fraud:
    slack_group: S0FRAUDDS
permissions:
  users: []
  groups: [{PLATFORM_GROUP}]
  on_call: true
routes:
  - name: churn
    matchers: ['model="churn"', 'severity=~"critical|page"']
    tier: L1
    team: ds-churn
  - name: fraud
    matchers: ['model="fraud"']
    tier: L1
    team: ds-fraud
  - name: page
    matchers: ['severity=~"critical|page"']
    tier: L1
  - name: default
    tier: L0
"""


@pytest.fixture
def app_bot(bot_env, tmp_path: Path, slack, pagerduty):
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    slack.add_user(ON_CALL, "ada", "ada@example.com", real_name="Ada Lovelace")
    slack.add_user(PLATFORM, "grace", "grace@example.com")
    slack.add_user(STRANGER, "eve", "eve@example.com")
    slack.add_usergroup(PLATFORM_GROUP, "ml-platform", [PLATFORM])
    pagerduty.set_oncalls([{"user_id": "PADA001", "user_name": "Ada Lovelace",
                            "email": "ada@example.com", "escalation_policy_id": "PEP0001",
                            "schedule_id": "PSCHED1", "escalation_level": 1,
                            "start": "2026-11-27T00:00:00Z", "end": "2026-12-04T00:00:00Z"}])
    env = {**bot_env, "ONCALL_CONFIG": str(routes), "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "PAGERDUTY_WEBHOOK_SECRET": PD_WEBHOOK_SECRET,
           "PAGERDUTY_ESCALATION_POLICY_IDS": "PEP0001",
           "CHURN_PAGERDUTY_ROUTING_KEY": TEAM_KEY}
    bot = BotProcess(env, log_path=tmp_path / "bot.log", token=WEBHOOK_TOKEN)
    bot.start()
    yield bot
    bot.stop()


def slash(bot, slack, text: str, user: str = STRANGER, *, timestamp=None, secret=SIGNING_SECRET):
    """POST a signed /oncall; returns (HTTP response, the ephemeral answer or None)."""
    name = f"cmd-{time.monotonic_ns()}"
    body = slash_command_body(text, user_id=user, response_url=slack.response_url(name))
    response = bot.http.post("/slack/events", content=body,
                             headers=slack_headers(secret, body, timestamp))
    if response.status_code != 200:
        return response, None
    if response.content:  # answered in the ack itself (usage errors)
        return response, response.json()["text"]
    answers = bot.until(lambda: slack.responses(name), what=f"the answer to /oncall {text}")
    return response, answers[0]["text"]


def click(bot, slack, action: str, incident_id: int, user: str = STRANGER):
    name = f"click-{time.monotonic_ns()}"
    (message,) = slack.top_level_messages(slack.channel_id("#ml-alerts"))
    body = block_actions_body(action, str(incident_id), user, message["channel"], message["ts"],
                              response_url=slack.response_url(name))
    response = bot.http.post("/slack/events", content=body,
                             headers=slack_headers(SIGNING_SECRET, body))
    assert response.status_code == 200, response.text
    return name


def pd_webhook(bot, event_type: str, key: str, status: str, *, webhook_id=None, secret=None,
               raw: bytes | None = None, agent="Ada Lovelace"):
    body = raw if raw is not None else json.dumps(
        pagerduty_webhook(event_type, key, status, agent_name=agent)).encode()
    headers = pagerduty_headers(secret or PD_WEBHOOK_SECRET, body, webhook_id=webhook_id)
    return bot.http.post("/webhooks/pagerduty", content=body, headers=headers)


def page_one(bot, slack, pagerduty, doc=None) -> tuple[int, str]:
    assert bot.post("alertmanager", doc or example("alertmanager-firing.json")).status_code == 202
    bot.until(bot.outbox_settled, what="the page and the Slack message")
    ((incident_id, key),) = bot.rows("SELECT id, key FROM incident")
    return incident_id, key


def kinds(bot, incident_id: int) -> list[tuple[str, str]]:
    return [(r.kind, r.actor) for r in bot.rows(
        "SELECT kind, actor FROM timelineentry WHERE incident_id = :i ORDER BY id", i=incident_id)]


def test_ack_from_slack_and_resolve_from_pagerduty_agree_everywhere(app_bot, slack, pagerduty):
    incident_id, key = page_one(app_bot, slack, pagerduty)
    (message,) = slack.top_level_messages()
    buttons = [e["action_id"] for b in message["blocks"] if b["type"] == "actions"
               for e in b["elements"]]
    assert buttons == ["incident_ack", "incident_resolve", "incident_escalate",
                       "incident_silence"]

    click(app_bot, slack, "incident_ack", incident_id, user=STRANGER)
    app_bot.until(lambda: pagerduty.alert_status(key) == "acknowledged", what="the PD ack")
    app_bot.until(app_bot.outbox_settled, what="the Slack update")
    (message,) = slack.top_level_messages()
    assert "ACKNOWLEDGED" in message["blocks"][0]["text"]["text"]
    assert f"acknowledged by <@{STRANGER}>" in json.dumps(message["blocks"])
    assert "incident_ack" not in json.dumps(message["blocks"])

    response = pd_webhook(app_bot, "incident.resolved", key, "resolved")
    assert response.status_code == 202, response.text
    app_bot.until(app_bot.outbox_settled, what="the Slack update")
    (message,) = slack.top_level_messages()
    assert "RESOLVED" in message["blocks"][0]["text"]["text"]
    (actions,) = [b for b in message["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == ["incident_postmortem"]
    replies = [r["text"] for r in slack.thread(message["channel"], message["ts"])]
    assert any("Acknowledged by" in r for r in replies)
    assert any("Resolved by Ada Lovelace (in PagerDuty)" in r for r in replies)

    # PagerDuty got trigger and acknowledge; the resolve came from it, so none is echoed back.
    assert [e["event"]["event_action"] for e in pagerduty.events_for(key)] == [
        "trigger", "acknowledge"]
    assert pagerduty.alert_status(key) == "acknowledged"  # the stand-in knows no webhooks
    story = kinds(app_bot, incident_id)
    assert ("acknowledged", f"slack:{STRANGER}") in story
    assert ("resolved", "pagerduty:Ada Lovelace") in story
    ((state, acked_by, resolved_by),) = app_bot.rows(
        "SELECT state, acknowledged_by, resolved_by FROM incident")
    assert (state, acked_by, resolved_by) == ("resolved", f"slack:{STRANGER}",
                                              "pagerduty:Ada Lovelace")
    assert slack.violations == [] and pagerduty.violations == []


def test_oncall_who_names_the_engineer_on_call(app_bot, slack):
    _, answer = slash(app_bot, slack, "who")
    assert "Ada Lovelace" in answer and "Level 1" in answer and "2026-12-04" in answer


def test_help_and_usage_errors_answer_ephemerally(app_bot, slack):
    _, answer = slash(app_bot, slack, "help")
    assert "/oncall silence" in answer and "/oncall declare" in answer
    for text, expected in (("frobnicate", "Unknown subcommand"), ("ack", "Usage: `/oncall ack ID`"),
                           ("ack twelve", "not an incident number"),
                           ("silence model=churn", "for=2h"),
                           ("list colour=red", "Usage: `/oncall list")):
        response, answer = slash(app_bot, slack, text)
        assert expected in answer, (text, answer)
        assert response.json()["response_type"] == "ephemeral"


def test_list_show_ack_note_and_resolve_by_command(app_bot, slack, pagerduty):
    incident_id, key = page_one(app_bot, slack, pagerduty)
    _, answer = slash(app_bot, slack, "list model=churn")
    assert f"#{incident_id}" in answer and "triggered" in answer
    assert "No incidents match" in slash(app_bot, slack, "list model=fraud")[1]

    assert "Acknowledged" in slash(app_bot, slack, f"ack {incident_id}")[1]
    assert "already acknowledged" in slash(app_bot, slack, f"ack {incident_id}")[1]
    assert "Noted" in slash(app_bot, slack, f"note {incident_id} restarted the scorer pod")[1]

    refused = slash(app_bot, slack, f"resolve {incident_id}", user=STRANGER)[1]
    assert "You may not resolve an L1 incident" in refused
    assert f"<!subteam^{PLATFORM_GROUP}>" in refused and "on call" in refused
    assert "Resolved" in slash(app_bot, slack, f"resolve {incident_id} rolled back v7",
                               user=PLATFORM)[1]
    app_bot.until(app_bot.outbox_settled, what="deliveries")
    assert [e["event"]["event_action"] for e in pagerduty.events_for(key)] == [
        "trigger", "acknowledge", "resolve"]

    shown = slash(app_bot, slack, f"show {incident_id}")[1]
    for kind in ("opened", "paged", "acknowledged", "note", "resolved"):
        assert kind in shown, kind
    assert "rolled back v7" in shown
    assert "already resolved" in slash(app_bot, slack, f"resolve {incident_id}",
                                       user=PLATFORM)[1]
    assert "There is no incident #999" in slash(app_bot, slack, "ack 999")[1]


def test_declare_pages_like_any_l1(app_bot, slack, pagerduty):
    answer = slash(app_bot, slack, 'declare "Churn scores look off" model=churn')[1]
    assert "Declared incident" in answer
    app_bot.until(app_bot.outbox_settled, what="the page")
    ((tier, team, title, key),) = app_bot.rows("SELECT tier, team, title, key FROM incident")
    assert (tier, team, title) == ("L1", "ds-churn", "Churn scores look off")
    assert len(pagerduty.events_for(key)) == 1
    assert len(slack.top_level_messages()) == 1


def test_silences_by_command_need_permission(app_bot, slack, pagerduty):
    refused = slash(app_bot, slack, 'silence model="churn" for=2h retraining', user=STRANGER)[1]
    assert "You may not silence alerts" in refused
    assert app_bot.rows("SELECT id FROM silence") == []
    answer = slash(app_bot, slack, 'silence model="churn" for=2h retraining', user=ON_CALL)[1]
    assert "Silence #1" in answer
    listed = slash(app_bot, slack, "silences")[1]
    assert "#1" in listed and "retraining" in listed and f"<@{ON_CALL}>" in listed
    assert bot_alert_is_silenced(app_bot)
    assert "ended" in slash(app_bot, slack, "unsilence 1", user=PLATFORM)[1]
    assert "No silences" in slash(app_bot, slack, "silences")[1]


def bot_alert_is_silenced(bot) -> bool:
    assert bot.post("alertmanager", example("alertmanager-firing.json")).status_code == 202
    return bot.rows("SELECT silence_id FROM incident")[0].silence_id == 1


def test_escalate_pages_the_owning_team_and_resolve_closes_that_page(app_bot, slack, pagerduty):
    incident_id, key = page_one(app_bot, slack, pagerduty)
    name = click(app_bot, slack, "incident_escalate", incident_id, user=STRANGER)
    refusal = app_bot.until(lambda: slack.responses(name), what="the refusal")[0]
    assert "You may not escalate" in refusal["text"] and refusal["response_type"] == "ephemeral"
    assert app_bot.rows("SELECT escalated_team FROM incident")[0].escalated_team is None

    click(app_bot, slack, "incident_escalate", incident_id, user=ON_CALL)
    app_bot.until(lambda: pagerduty.events_for(f"{key}-l2"), what="the team's page")
    (l2,) = pagerduty.events_for(f"{key}-l2")
    assert l2["event"]["routing_key"] == TEAM_KEY
    assert l2["event"]["payload"]["summary"].startswith("[L2 ds-churn]")
    app_bot.until(app_bot.outbox_settled, what="the Slack update")
    (message,) = slack.top_level_messages()
    assert "escalated to ds-churn" in json.dumps(message["blocks"])
    assert "incident_escalate" not in json.dumps(message["blocks"])

    click(app_bot, slack, "incident_resolve", incident_id, user=PLATFORM)
    app_bot.until(lambda: pagerduty.alert_status(f"{key}-l2") == "resolved",
                  what="the team's page to resolve")
    assert pagerduty.alert_status(key) == "resolved"
    assert ("escalated", f"slack:{ON_CALL}") in kinds(app_bot, incident_id)


def test_escalating_a_team_without_pagerduty_mentions_its_slack_group(app_bot, slack, pagerduty):
    doc = example("alertmanager-firing.json")
    doc["alerts"][0]["labels"]["model"] = "fraud"
    incident_id, key = page_one(app_bot, slack, pagerduty, doc)
    click(app_bot, slack, "incident_escalate", incident_id, user=PLATFORM)
    app_bot.until(lambda: app_bot.rows("SELECT id FROM incident WHERE escalated_team='ds-fraud'"),
                  what="the escalation")
    app_bot.until(app_bot.outbox_settled, what="the thread reply")
    (message,) = slack.top_level_messages()
    replies = [r["text"] for r in slack.thread(message["channel"], message["ts"])]
    assert any("<!subteam^S0FRAUDDS>" in r for r in replies)
    assert pagerduty.events_for(f"{key}-l2") == []


def test_a_team_key_unset_at_start_is_warned_about_by_name_and_its_slack_group_helps(
        bot_env, tmp_path, slack, pagerduty):
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    slack.add_user(PLATFORM, "grace", "grace@example.com")
    slack.add_usergroup(PLATFORM_GROUP, "ml-platform", [PLATFORM])
    env = {**bot_env, "ONCALL_CONFIG": str(routes), "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    env.pop("CHURN_PAGERDUTY_ROUTING_KEY", None)
    bot = BotProcess(env, log_path=tmp_path / "bot.log", token=WEBHOOK_TOKEN)
    bot.start()
    try:
        warnings = [json.loads(line)["message"] for line in bot.log().splitlines()
                    if '"WARNING"' in line]
        assert (f"{routes}: teams.ds-churn.pagerduty_routing_key_env: CHURN_PAGERDUTY_ROUTING_KEY "
                "is not set: escalation mentions Slack group S0CHURNDS instead") in warnings
        incident_id, key = page_one(bot, slack, pagerduty)
        click(bot, slack, "incident_escalate", incident_id, user=PLATFORM)
        bot.until(lambda: bot.rows("SELECT id FROM incident WHERE escalated_team='ds-churn'"),
                  what="the escalation")
        bot.until(bot.outbox_settled, what="the thread reply")
        (message,) = slack.top_level_messages()
        replies = [r["text"] for r in slack.thread(message["channel"], message["ts"])]
        assert any("<!subteam^S0CHURNDS>" in r for r in replies)
        assert pagerduty.events_for(f"{key}-l2") == []
    finally:
        bot.stop()


def test_silence_button_silences_the_group_for_an_hour(app_bot, slack, pagerduty):
    incident_id, _ = page_one(app_bot, slack, pagerduty)
    click(app_bot, slack, "incident_silence", incident_id, user=ON_CALL)
    app_bot.until(lambda: app_bot.rows("SELECT matchers FROM silence"), what="the silence")
    (row,) = app_bot.rows("SELECT matchers, created_by, starts_at, ends_at FROM silence")
    matchers = json.loads(row.matchers) if isinstance(row.matchers, str) else row.matchers
    assert matchers == ['alertname="ModelErrorRateHigh"', 'model="churn"',
                        'environment="production"']
    assert row.created_by == f"slack:{ON_CALL}"
    app_bot.until(app_bot.outbox_settled, what="the thread reply")
    (message,) = slack.top_level_messages()
    replies = [r["text"] for r in slack.thread(message["channel"], message["ts"])]
    assert any(f"Silenced for 1h by <@{ON_CALL}>" in r for r in replies)


def test_buttons_on_a_resolved_incident_change_nothing(app_bot, slack, pagerduty):
    incident_id, key = page_one(app_bot, slack, pagerduty)
    assert pd_webhook(app_bot, "incident.resolved", key, "resolved").status_code == 202
    app_bot.until(app_bot.outbox_settled, what="deliveries")
    before = app_bot.snapshot()
    for action in ("incident_ack", "incident_resolve", "incident_escalate", "incident_silence"):
        name = click(app_bot, slack, action, incident_id, user=PLATFORM)
        answer = app_bot.until(lambda n=name: slack.responses(n), what="the answer")[0]
        assert "already resolved" in answer["text"] and answer["response_type"] == "ephemeral"
    assert app_bot.snapshot() == before


def test_forged_stale_and_malformed_slack_requests_are_refused(app_bot, slack, pagerduty):
    incident_id, _ = page_one(app_bot, slack, pagerduty)
    before = app_bot.snapshot()
    body = slash_command_body(f"ack {incident_id}", user_id=PLATFORM)
    forged = app_bot.http.post("/slack/events", content=body,
                               headers=slack_headers("not-the-secret", body))
    stale = app_bot.http.post("/slack/events", content=body,
                              headers=slack_headers(SIGNING_SECRET, body, int(time.time()) - 600))
    unsigned = app_bot.http.post("/slack/events", content=body,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    tampered_headers = slack_headers(SIGNING_SECRET, body)
    tampered = app_bot.http.post("/slack/events", content=body.replace(b"ack", b"res"),
                                 headers=tampered_headers)
    for response in (forged, stale, unsigned, tampered):
        assert response.status_code == 401
    assert app_bot.snapshot() == before
    assert slack.responses() == []


def test_pagerduty_webhooks_forged_replayed_unknown_and_malformed(app_bot, slack, pagerduty):
    incident_id, key = page_one(app_bot, slack, pagerduty)
    before = app_bot.snapshot()
    body = json.dumps(pagerduty_webhook("incident.acknowledged", key, "acknowledged")).encode()
    assert pd_webhook(app_bot, "", "", "", raw=body, secret="wrong").status_code == 401
    unsigned = app_bot.http.post("/webhooks/pagerduty", content=body,
                                 headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 401
    assert pd_webhook(app_bot, "", "", "", raw=b"{nope").status_code == 400
    assert pd_webhook(app_bot, "", "", "", raw=b'{"messages": []}').status_code == 422
    unknown = pd_webhook(app_bot, "incident.acknowledged", "no-such-key", "acknowledged")
    assert unknown.status_code == 202 and "unknown incident" in unknown.text
    other = pd_webhook(app_bot, "incident.priority_updated", key, "triggered")
    assert other.status_code == 202 and "not acted on" in other.text
    assert app_bot.snapshot()["incident"] == before["incident"]

    body = json.dumps(pagerduty_webhook("incident.acknowledged", key, "acknowledged")).encode()
    first = pd_webhook(app_bot, "", "", "", raw=body, webhook_id="W1")
    again = pd_webhook(app_bot, "", "", "", raw=body, webhook_id="W1")  # PagerDuty's retry
    assert first.status_code == again.status_code == 202
    assert "duplicate" in again.text
    app_bot.until(app_bot.outbox_settled, what="deliveries")
    assert [k for k, _ in kinds(app_bot, incident_id)].count("acknowledged") == 1
    # Acknowledged in PagerDuty: nothing is sent back to PagerDuty for it.
    assert [e["event"]["event_action"] for e in pagerduty.events_for(key)] == ["trigger"]


def test_signature_rotation_accepts_any_current_secret(app_bot, slack, pagerduty):
    _, key = page_one(app_bot, slack, pagerduty)
    body = json.dumps(pagerduty_webhook("incident.acknowledged", key, "acknowledged")).encode()
    headers = pagerduty_headers("old-secret", body, extra_secrets=(PD_WEBHOOK_SECRET,))
    assert app_bot.http.post("/webhooks/pagerduty", content=body,
                             headers=headers).status_code == 202
    assert app_bot.rows("SELECT state FROM incident")[0].state == "acknowledged"


def test_concurrent_ack_from_slack_and_pagerduty_records_one(app_bot, slack, pagerduty):
    incident_id, key = page_one(app_bot, slack, pagerduty)
    results = []

    def from_slack():
        results.append(click(app_bot, slack, "incident_ack", incident_id, user=ON_CALL))

    def from_pagerduty():
        results.append(pd_webhook(app_bot, "incident.acknowledged", key,
                                  "acknowledged").status_code)

    threads = [threading.Thread(target=from_slack), threading.Thread(target=from_pagerduty)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert 202 in results
    app_bot.until(lambda: app_bot.rows("SELECT id FROM incident WHERE state='acknowledged'"),
                  what="the acknowledgement")
    app_bot.until(app_bot.outbox_settled, what="deliveries")
    time.sleep(0.5)
    assert [k for k, _ in kinds(app_bot, incident_id)].count("acknowledged") == 1
    assert "error" not in app_bot.log().lower().replace("delivery_failed", "")


def test_a_mention_is_answered_with_help_in_its_thread(app_bot, slack):
    channel = slack.channel_id("#ml-alerts")
    body = json.dumps({
        "token": "x", "team_id": "T0TEAM0001", "api_app_id": "A0ONCALLBOT", "type": "event_callback",
        "event_id": "Ev0MENTION1", "event_time": int(time.time()),
        "event": {"type": "app_mention", "user": STRANGER, "text": "<@U0STANDBOT> help?",
                  "ts": "1700000000.000100", "channel": channel, "event_ts": "1700000000.000100"},
    }).encode()
    response = app_bot.http.post("/slack/events", content=body, headers=slack_headers(
        SIGNING_SECRET, body, content_type="application/json"))
    assert response.status_code == 200
    posted = app_bot.until(lambda: slack.calls("chat.postMessage"), what="the help reply")
    assert posted[0].body["thread_ts"] == "1700000000.000100"
    assert "/oncall who" in posted[0].body["text"]


def test_manifest_declares_the_command_scopes_and_urls():
    import yaml

    manifest = yaml.safe_load((Path(__file__).parents[2] / "slack-app-manifest.yml").read_text())
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/oncall" and command["url"].endswith("/slack/events")
    assert manifest["settings"]["interactivity"]["request_url"].endswith("/slack/events")
    assert manifest["settings"]["event_subscriptions"]["request_url"].endswith("/slack/events")
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "users:read", "users:read.email",
            "usergroups:read"} <= scopes


def test_report_and_postmortem_from_slack(app_bot, slack, pagerduty):
    incident_id, key = page_one(app_bot, slack, pagerduty)
    click(app_bot, slack, "incident_ack", incident_id, user=ON_CALL)
    app_bot.until(app_bot.outbox_settled, what="the ack")
    assert pd_webhook(app_bot, "incident.resolved", key, "resolved").status_code == 202
    app_bot.until(app_bot.outbox_settled, what="the resolve")

    name = f"report-{time.monotonic_ns()}"
    body = slash_command_body("report 7d", user_id=STRANGER, response_url=slack.response_url(name))
    assert app_bot.http.post("/slack/events", content=body,
                             headers=slack_headers(SIGNING_SECRET, body)).status_code == 200
    (answer,) = app_bot.until(lambda: slack.responses(name), what="the report")
    assert answer["response_type"] == "ephemeral" and answer["blocks"]
    assert "1 incidents" in answer["text"] or "1 incident" in answer["text"]
    assert "not a period" in slash(app_bot, slack, "report soon")[1]
    # Its chart is shared in the channel the command came from (C0ALERTS01), once.
    (chart,) = app_bot.until(lambda: slack.uploads("C0ALERTS01"), what="the report's chart")
    assert chart["content"].startswith(b"\x89PNG\r\n\x1a\n")
    assert f"for <@{STRANGER}>" in chart["initial_comment"]

    (message,) = slack.top_level_messages(slack.channel_id("#ml-alerts"))
    assert "incident_postmortem" in json.dumps(message["blocks"])
    name = click(app_bot, slack, "incident_postmortem", incident_id, user=STRANGER)
    (draft,) = app_bot.until(lambda: slack.responses(name), what="the postmortem")
    assert draft["response_type"] == "ephemeral"
    assert "ModelErrorRateHigh" in draft["text"] and "Root cause" in draft["text"]


def test_oncall_who_reads_every_page_of_oncalls(app_bot, slack, pagerduty):
    """A larger account answers GET /oncalls in pages: the engineer on the last page is
    on call too (issue 14: only the first page was read)."""
    pagerduty.page_limit = 2
    names = [f"Engineer {n}" for n in range(1, 6)]
    pagerduty.set_oncalls([{"user_id": f"PENG00{n}", "user_name": name,
                            "email": f"eng{n}@example.com", "escalation_policy_id": "PEP0001",
                            "schedule_id": "PSCHED1", "escalation_level": n}
                           for n, name in enumerate(names, start=1)])
    _, answer = slash(app_bot, slack, "who")
    assert all(name in answer for name in names), answer
    offsets = [r.query.get("offset") for r in pagerduty.rest_requests("/oncalls")]
    assert offsets == [["0"], ["2"], ["4"]]
