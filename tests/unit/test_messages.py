"""Slack Block Kit rendering of incidents."""

from datetime import UTC, datetime

from bot.domain.messages import IncidentView, incident_message


def view(**overrides):
    base = dict(id=12, title="ModelErrorRateHigh model=churn: errors <5%> & rising",
                state="triggered", tier="L1", route="page", model="churn", version="7",
                environment="production", severity="critical",
                triggered_at=datetime(2026, 11, 27, 9, 0, tzinfo=UTC),
                annotations={"runbook_url": "https://runbooks.example/churn",
                             "dashboard_url": "javascript:alert(1)"})
    base.update(overrides)
    return IncidentView(**base)


def test_message_escapes_mrkdwn_and_shows_state_tier_and_model():
    text, blocks = incident_message(view())
    assert text.startswith("[TRIGGERED] L1 #12")
    assert blocks[0]["type"] == "header" and "TRIGGERED" in blocks[0]["text"]["text"]
    assert "&lt;5%&gt; &amp; rising" in blocks[1]["text"]["text"]
    fields = [f["text"] for f in blocks[2]["fields"]]
    assert "*Model*\nchurn v7" in fields and "*Environment*\nproduction" in fields


def test_only_http_links_are_rendered():
    _, blocks = incident_message(view())
    links = [e["text"] for e in blocks[-1]["elements"]]
    assert links == ["<https://runbooks.example/churn|Runbook>"]


def test_resolved_message_says_who_resolved_and_when():
    _, blocks = incident_message(view(state="resolved", resolved_by="alertmanager",
                                      resolved_at=datetime(2026, 11, 27, 9, 30, tzinfo=UTC),
                                      firing=0))
    assert "RESOLVED" in blocks[0]["text"]["text"]
    assert "resolved 09:30:00 UTC by alertmanager" in blocks[3]["elements"][0]["text"]


def test_huge_titles_stay_within_block_limits():
    _, blocks = incident_message(view(title="x" * 10_000, description="y" * 10_000))
    assert len(blocks[1]["text"]["text"]) <= 3000
    assert len(blocks[0]["text"]["text"]) <= 150
