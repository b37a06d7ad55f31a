"""Alert in, incident recorded, on-call paged, Slack told — over real HTTP and a real database."""

from __future__ import annotations

import copy

from tests.harness import example, wait_for


def _firing(name="ModelErrorRateHigh", model="churn", severity="critical", fingerprint=None,
            status="firing"):
    doc = example("alertmanager-firing.json")
    alert = doc["alerts"][0]
    alert["labels"].update(alertname=name, model=model, severity=severity)
    alert["fingerprint"] = fingerprint or f"{name}-{model}-{severity}"[:60]
    alert["status"] = status
    if status == "resolved":
        alert["endsAt"] = "2026-11-27T10:00:00Z"
    doc["status"] = status
    return doc


def test_example_payload_firing_then_resolved_pages_once_and_updates_slack(bot, slack,
                                                                           pagerduty):
    assert bot.post("alertmanager", example("alertmanager-firing.json")).status_code == 202
    wait_for(lambda: pagerduty.triggers(), what="the page")
    assert bot.post("alertmanager", example("alertmanager-resolved.json")).status_code == 202
    bot.until(bot.outbox_settled, what="all deliveries")

    incidents = bot.rows("SELECT id, key, state, tier FROM incident")
    assert len(incidents) == 1
    incident = incidents[0]
    assert (incident.state, incident.tier) == ("resolved", "L1")
    events = pagerduty.events_for(incident.key)
    assert [e["event"]["event_action"] for e in events] == ["trigger", "resolve"]
    assert pagerduty.alert_status(incident.key) == "resolved"
    trigger = events[0]["event"]
    assert trigger["payload"]["severity"] == "critical"
    assert trigger["payload"]["component"] == "churn"

    messages = slack.top_level_messages()
    assert len(messages) == 1
    assert "RESOLVED" in messages[0]["blocks"][0]["text"]["text"]
    assert len(slack.calls("chat.postMessage")) == 1
    assert slack.calls("chat.update")
    assert slack.violations == [] and pagerduty.violations == []

    kinds = [row.kind for row in bot.rows(
        "SELECT kind FROM timelineentry WHERE incident_id = :i ORDER BY id", i=incident.id)]
    assert kinds[0] == "opened" and "resolved" in kinds
    assert kinds.index("paged") < kinds.index("pagerduty_resolve")


def test_a_thousand_repeats_of_one_firing_alert_make_one_incident_and_one_page(
        bot, slack, pagerduty):
    doc = _firing()
    for _ in range(1000):
        assert bot.post("alertmanager", doc).status_code == 202
    bot.until(bot.outbox_settled, what="all deliveries")
    assert len(bot.rows("SELECT id FROM incident")) == 1
    assert len(pagerduty.triggers()) == 1
    assert len(slack.top_level_messages()) == 1
    (occurrence,) = bot.rows("SELECT repeats FROM alertoccurrence")
    assert occurrence.repeats == 999


def test_tiers_decide_who_is_told(bot, slack, pagerduty):
    for severity in ("critical", "warning", "info"):
        assert bot.post("alertmanager", _firing(name=f"Drift-{severity}",
                                                severity=severity)).status_code == 202
    bot.until(bot.outbox_settled, what="all deliveries")
    tiers = dict(bot.rows("SELECT severity, tier FROM incident"))
    assert tiers == {"critical": "L1", "warning": "L0", "info": "record"}
    assert len(pagerduty.triggers()) == 1  # only the L1 pages
    assert len(slack.top_level_messages()) == 2  # L1 and L0 post; record-only does not


def test_another_alert_joins_the_open_incident_with_a_thread_reply(bot, slack, pagerduty):
    first = _firing(fingerprint="aaaa")
    second = copy.deepcopy(first)
    second["alerts"][0]["fingerprint"] = "bbbb"
    second["alerts"][0]["labels"]["instance"] = "churn-2:8080"
    bot.post("alertmanager", first)
    wait_for(lambda: slack.top_level_messages(), what="the incident message")
    bot.post("alertmanager", second)
    bot.until(bot.outbox_settled, what="all deliveries")
    assert len(bot.rows("SELECT id FROM incident")) == 1
    (message,) = slack.top_level_messages()
    replies = slack.thread(message["channel"], message["ts"])
    assert len(replies) == 1 and "joined" in replies[0]["text"]
    assert "2 of 2 alert(s) firing" in str(message["blocks"])
    assert len(pagerduty.triggers()) == 1


def test_refiring_within_the_reopen_window_reopens_and_pages_again(bot, slack, pagerduty):
    bot.post("alertmanager", _firing())
    bot.post("alertmanager", _firing(status="resolved"))
    bot.post("alertmanager", _firing())
    bot.until(bot.outbox_settled, what="all deliveries")
    ((key, state, reopened),) = bot.rows("SELECT key, state, reopen_count FROM incident")
    assert (state, reopened) == ("triggered", 1)
    assert [e["event"]["event_action"] for e in pagerduty.events_for(key)] == [
        "trigger", "resolve", "trigger"]
    assert pagerduty.alert_status(key) == "triggered"
    (message,) = slack.top_level_messages()
    assert "TRIGGERED" in message["blocks"][0]["text"]["text"]


def test_grafana_and_generic_webhooks_open_incidents(bot, pagerduty):
    generic = {**example("generic-firing.json"), "alertname": "FeatureStale"}
    assert bot.post("grafana", example("grafana-firing.json")).status_code == 202
    assert bot.post("generic", generic).status_code == 202
    sources = sorted(row.source for row in bot.rows("SELECT source FROM incident"))
    assert sources == ["generic", "grafana"]
    # The same model, environment and alertname from another source joins the open incident.
    assert bot.post("generic", example("generic-firing.json")).status_code == 202
    assert len(bot.rows("SELECT id FROM incident")) == 2
