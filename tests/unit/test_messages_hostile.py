"""Every Slack text the bot renders, filled with attacker-written values: no live mention
or link survives, and every block fits Slack's limits.

The checker: in mrkdwn, the only `<…>` sequences allowed are mentions and links the bot
made from trusted data (the IDs and URLs listed below), and every `&` starts an escape.
plain_text is never escaped (Slack would show `&lt;` as written).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from bot.domain.answers import (
    RollbackView,
    handoff_digest_text,
    incident_detail_text,
    incident_list_text,
    on_call_text,
    rollback_preview,
    runbook_list_text,
    silence_created_text,
    silence_ended_text,
    silence_list_text,
)
from bot.domain.commands import CommandError, parse_command
from bot.domain.messages import (
    CONTEXT_TEXT,
    LONG_MESSAGE_TEXT,
    MESSAGE_TEXT,
    REPLIES,
    IncidentView,
    Mrkdwn,
    RunStepView,
    RunView,
    cut,
    incident_message,
    link,
    md,
    mention,
    mrkdwn_text,
    run_message,
    safe_url,
    thread_reply,
)
from bot.domain.permissions import Guarded, who_may
from bot.domain.routing import Permissions
from bot.domain.scorecard import IncidentFacts, compute
from bot.reports import weekly_post
from bot.slack_app.commands import answer_text
from bot.usecases import ActionRefused
from bot.web.pagerduty import _actor
from tests.standins.slack import block_problems, control_sequences

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
HUGE = "x" * 100_000
HOSTILE = [
    "<!channel>", "<!here>", "<!everyone>", "<!subteam^S123>", "<@U123>", "<#C123>",
    "<https://evil.example|open the runbook>", "churn <!channel> <https://evil.example|open the runbook>",
    "a & b", "&lt;!channel&gt;", "javascript:alert(1)", "https://evil.example/x|label",
    "*bold* _it_ `code` ```fence", "{0} {name} %s", "\x00\u202e\n",
    "<" * 3000, "&" * 3000, HUGE, HUGE + "<!channel>", "<!here>" + HUGE,
]
HOSTILE_URLS = [
    "javascript:alert(1)", "https://evil.example|open the runbook", "https://evil.example/<!channel>",
    "https://evil.example/a>b", "https://evil.example/a b", "https://evil.example/\x00",
    "https://evil.example/\u202e", "http://", "ftp://files.example/x", "https://" + HUGE,
    "HTTPS://evil.example/ok?<!here>", "https://[::1", "",
]
# What the bot itself may turn into mentions and links.
TRUSTED_USERS = {"U0GOOD01", "W0GOOD02"}
TRUSTED_GROUPS = {"S0GOOD03"}
TRUSTED_URLS = {"https://runbooks.example/churn?a=1&amp;b=2", "http://grafana.example/d/1"}


def live_sequences(text: str) -> list[str]:
    """Control sequences in mrkdwn that the bot did not make from trusted data."""
    bad = []
    for found in control_sequences(text):
        inner = found[1:-1]
        if found.startswith("<") and found.endswith(">"):
            if inner.startswith("@") and inner[1:] in TRUSTED_USERS:
                continue
            if inner.startswith("!subteam^") and inner.removeprefix("!subteam^") in TRUSTED_GROUPS:
                continue
            url, bar, _ = inner.partition("|")
            if bar and url in TRUSTED_URLS:
                continue
        bad.append(found)
    return bad


def text_objects(blocks: list[dict]) -> list[dict]:
    found = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn", "plain_text") and "text" in node:
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return found


def assert_safe(text: str, blocks: list[dict] | None = None, limit: int = MESSAGE_TEXT) -> None:
    assert isinstance(text, Mrkdwn), f"Slack text not built with md: {text[:80]!r}"
    assert len(text) <= limit
    assert live_sequences(text) == [], text[:300]
    if blocks is None:
        return
    assert block_problems(blocks) == []
    for block in blocks:
        if block["type"] == "context":
            assert all(len(e["text"]) <= CONTEXT_TEXT for e in block["elements"])
    for obj in text_objects(blocks):
        if obj["type"] == "mrkdwn":
            assert live_sequences(obj["text"]) == [], obj["text"][:300]
        else:  # shown as written: escaping would show `&lt;` to people
            assert "&lt;" not in obj["text"] and "&amp;" not in obj["text"]


# -- the incident message, in every state -------------------------------------------


def hostile_view(value: str, url: str, **overrides: object) -> IncidentView:
    base: dict = dict(
        id=7, title=value, state="triggered", tier="L1", route=value, model=value,
        version=value, environment=value, severity=value, team=value, description=value,
        triggered_at=NOW, annotations={"runbook_url": url, "dashboard_url": url,
                                       "panel_url": "https://runbooks.example/churn?a=1&b=2"})
    base.update(overrides)
    return IncidentView(**base)


STATES = [
    {"state": "triggered"},
    {"state": "triggered", "can_roll_back": True, "team": None},
    {"state": "acknowledged", "acknowledged_by": "pagerduty:<!channel> Mallory"},
    {"state": "acknowledged", "acknowledged_by": "slack:U0GOOD01", "escalated_team": "<!here>"},
    {"state": "acknowledged", "acknowledged_by": "slack:<!here>"},
    {"state": "resolved", "resolved_at": NOW, "resolved_by": "pagerduty:" + HUGE},
    {"state": "resolved", "resolved_at": NOW, "resolved_by": "<https://evil.example|x>"},
]


@pytest.mark.parametrize("state", STATES, ids=lambda s: "-".join(map(str, s.values()))[:40])
@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v[:20]))
def test_incident_message_in_every_state_shows_hostile_values_as_text(state, value):
    for url in HOSTILE_URLS[:3] + HOSTILE_URLS[-4:]:
        text, blocks = incident_message(hostile_view(value, url, **state))
        assert_safe(text, blocks)


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_a_hostile_runbook_url_is_never_a_link(url):
    _, blocks = incident_message(hostile_view("churn", url))
    links = blocks[-1]["elements"]
    assert links[-1]["text"] == "<https://runbooks.example/churn?a=1&amp;b=2|Panel>"
    for element in links[:-1]:
        assert "<" not in element["text"], element["text"]


def test_the_reported_alert_renders_no_live_mention_or_link():
    """The label and annotation from the issue's report."""
    view = hostile_view("churn <!channel> <https://evil.example|open the runbook>",
                        "https://evil.example|open the runbook",
                        description="<!here> the model is down, open the runbook")
    text, blocks = incident_message(view)
    assert_safe(text, blocks)
    assert "churn &lt;!channel&gt; &lt;https://evil.example|open the runbook&gt;" in text


# -- runbook runs ----------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v[:20]))
def test_run_replies_show_runbook_output_as_text(value):
    steps = [RunStepView(name=value, status=status, duration_s=1.5, output=value + "\n" + value)
             for status in ("passed", "failed", "error", "timeout", "skipped")] * 12
    for status in ("running", "passed", "failed"):
        text, blocks = run_message(RunView(title="Diagnostics", runbook=value, status=status,
                                           total=60, steps=steps))
        assert_safe(text, blocks)


def test_run_output_keeps_its_code_fence_when_cut():
    _, blocks = run_message(RunView("Diagnostics", "rb", "passed", 1,
                                    [RunStepView("s", "passed", 1.0, "<" * 5000)]))
    assert blocks[1]["text"]["text"].endswith("…```")


# -- thread replies, answers, digests --------------------------------------------------


@pytest.mark.parametrize("kind", sorted(REPLIES))
@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v[:20]))
def test_every_thread_reply_escapes_every_value(kind, value):
    fields = {name for _, name, _, _ in string.Formatter().parse(REPLIES[kind]) if name}
    assert_safe(thread_reply(kind, **dict.fromkeys(fields, value)))


def test_replies_keep_the_mentions_the_bot_makes():
    text = thread_reply("note", actor=mention("U0GOOD01"), text="<@U123> look")
    assert text == "Note from <@U0GOOD01>: &lt;@U123&gt; look"


@dataclass
class Row:  # stands for the Incident, TimelineEntry and Silence rows
    id: int = 3
    title: str = ""
    tier: str = "L1"
    state: str = "triggered"
    model: str | None = None
    route: str = "page"
    triggered_at: datetime = NOW
    at: datetime = NOW
    actor: str = ""
    kind: str = "note"
    detail: str = ""
    matchers: tuple = ()
    ends_at: datetime = NOW + timedelta(hours=1)
    created_by: str = ""
    comment: str = ""


@dataclass
class Shift:
    name: str
    level: int = 1
    until: str | None = None
    schedule: str | None = None


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v[:20]))
def test_lists_timelines_silences_and_digests_escape_every_value(value):
    incidents = [Row(title=value, model=value, route=value)] * 40
    entries = [Row(actor=actor, detail=value) for actor in
               ("pagerduty:" + value, "slack:" + value, value, "slack:U0GOOD01")] * 10
    silence = Row(matchers=(f'model="{value}"', value), created_by=value, comment=value)
    shifts = [Shift(value, schedule=value, until=value)] * 5
    texts = [
        incident_list_text(incidents, NOW),
        incident_detail_text(incidents[0], entries, NOW),
        silence_list_text([silence] * 20, NOW),
        silence_created_text(silence),
        silence_ended_text(silence),
        on_call_text(shifts),
        handoff_digest_text(NOW, incidents, incidents, shifts),
        handoff_digest_text(NOW, incidents, [], value),
    ]
    for text in texts:
        assert_safe(answer_text(text), limit=LONG_MESSAGE_TEXT)
        assert answer_text(text) == cut(text, LONG_MESSAGE_TEXT)  # Mrkdwn is not escaped twice


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: repr(v[:20]))
def test_a_rollback_preview_and_the_runbook_list_escape_every_value(value):
    text, blocks = rollback_preview(RollbackView(
        confirmation_id="abcdefghijklmnop1234", model=value, alias=value, current=value,
        target=value, runbook=value, steps=[(value, value)] * 30, source=value, minutes=10))
    assert_safe(text)
    assert block_problems(blocks) == []
    assert live_sequences(blocks[0]["text"]["text"]) == []
    confirm = blocks[1]["elements"][0]
    assert confirm["value"] == "abcdefghijklmnop1234"
    assert confirm["text"]["type"] == "plain_text"  # shown as written: nothing to escape
    runbook = SimpleNamespace(name=value, description=value, changes_production=True)
    listed = runbook_list_text([runbook] * 5)
    assert_safe(answer_text(listed), limit=LONG_MESSAGE_TEXT)


@pytest.mark.parametrize("value", HOSTILE[:12], ids=lambda v: repr(v[:20]))
def test_scorecard_post_escapes_model_names(value):
    facts = [IncidentFacts(id=n, tier="L1", source="alertmanager", model=f"{value}{n}",
                           triggered_at=NOW - timedelta(hours=n)) for n in range(1, 8)]
    text, blocks = weekly_post(compute(facts, since=NOW - timedelta(days=7), until=NOW, now=NOW))
    assert_safe(text, blocks)


@pytest.mark.parametrize("name", HOSTILE, ids=lambda v: repr(v[:20]))
def test_pagerduty_agent_names_are_text(name):
    actor = _actor({"agent": {"summary": name, "type": "user_reference"}})
    assert_safe(actor.mention)
    assert len(actor.id) <= 200
    assert_safe(thread_reply("acknowledged", actor=actor.mention, via=actor.via))


@pytest.mark.parametrize("agent", [None, "x", [], {"summary": None}, {"summary": 12}])
def test_a_malformed_agent_is_named_pagerduty(agent):
    assert _actor({"agent": agent}).mention in ("PagerDuty (in PagerDuty)", "12 (in PagerDuty)")


@pytest.mark.parametrize("text", [
    'silence model=~"<!channel>[" for=2h', "silence <https://evil.example|x> for=2h",
    "show <!here>", "list <@U123>=1", "report <!channel>", "runbook run x <!here>",
    "frobnicate <!everyone>", 'declare "<!channel>" tier=<!here>',
])
def test_command_arguments_echoed_in_errors_are_text(text):
    with pytest.raises(CommandError) as raised:
        parse_command(text)
    assert_safe(answer_text(str(raised.value)), limit=LONG_MESSAGE_TEXT)


def test_refusals_keep_the_bots_mentions_and_escape_the_rest():
    refusal = who_may(Guarded.SILENCE, Permissions(users=frozenset({"U0GOOD01", "<!channel>"}),
                                                   groups=frozenset({"S0GOOD03"})))
    shown = ActionRefused(refusal).text
    assert_safe(shown)
    assert "<@U0GOOD01>" in shown and "<!subteam^S0GOOD03>" in shown
    assert ActionRefused("No runbook serves model '<!here>'.").text == \
        "No runbook serves model '&lt;!here&gt;'."


# -- the pieces -------------------------------------------------------------------------


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_safe_url_refuses_what_could_break_out_of_a_link(url):
    assert safe_url(url) is None
    assert live_sequences(link(url, "Runbook")) == []


@pytest.mark.parametrize("url, expected", [
    ("https://runbooks.example/churn", "https://runbooks.example/churn"),
    ("http://grafana.example/d/1?a=1&b=2", "http://grafana.example/d/1?a=1&amp;b=2"),
    ("HTTPS://Grafana.example/x", "HTTPS://Grafana.example/x"),
])
def test_safe_url_keeps_ordinary_links(url, expected):
    assert safe_url(url) == expected
    assert link(url, "A & B") == f"<{expected}|A &amp; B>"


@pytest.mark.parametrize("text", ["&amp;" * 1000, "<@U0GOOD01> " * 500, "a" * 2998 + "&lt;",
                                  "<https://runbooks.example/churn?a=1&amp;b=2|Panel> " * 80])
def test_cut_never_splits_an_escape_or_a_link(text):
    for limit in range(2990, 3001):
        shown = cut(Mrkdwn(text), limit)
        assert len(shown) <= limit and shown.endswith("…")
        assert live_sequences(shown) == []
        assert not re.search(r"&[a-z]*…$", shown)


def test_md_escapes_values_and_keeps_its_own_text():
    assert md("*{}* {x}", "<!here>", x=mention("U0GOOD01")) == "*&lt;!here&gt;* <@U0GOOD01>"
    assert md("{:.5}", "<<<<<<<<") == "&lt;&lt;&lt;&lt;…"
    assert mention("<!channel>") == "&lt;!channel&gt;"


def test_mrkdwn_text_objects_refuse_unescaped_text():
    with pytest.raises(TypeError):
        mrkdwn_text("<!channel>", 3000)  # type: ignore[arg-type]
    assert mrkdwn_text(Mrkdwn(""), 3000)["text"]  # never empty: Slack refuses that
