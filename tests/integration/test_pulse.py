"""The satisfaction pulse (issue 13 item 5): posted at its cron time by the timer
leader, once; answered by signed clicks through the running bot, one answer per person
(a second click changes it), with an optional comment from a modal; hostile values refused.

Clicks and the modal's submission are signed as Slack signs them and sent to the bot
over HTTP; what Slack shows comes from the stand-in.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.clock import utcnow
from bot.db import Database
from bot.main import create_app
from bot.models import Pulse, PulseAnswer
from bot.settings import load_settings
from bot.store import DeliveryPolicy
from bot.usecases.pulse import open_pulse
from tests.conftest import WEBHOOK_TOKEN
from tests.harness import BotProcess
from tests.standins.signing import (
    block_actions_body,
    slack_headers,
    slash_command_body,
    view_submission_body,
)

SIGNING_SECRET = "slack-signing-secret-for-tests"
ADA, GRACE = "U0ADA0001", "U0GRACE01"
ROUTES = """
version: 1
pulse: {cron: "0 10 1 * *", timezone: Europe/Berlin, channel: "#ml-pulse"}
routes:
  - name: default
    tier: L0
"""
POLICY = DeliveryPolicy(True, True, "#ml-alerts")


@pytest.fixture
def pulse_bot(bot_env, tmp_path: Path, slack):
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    env = {**bot_env, "ONCALL_CONFIG": str(routes), "SLACK_SIGNING_SECRET": SIGNING_SECRET}
    bot = BotProcess(env, log_path=tmp_path / "bot.log", token=WEBHOOK_TOKEN)
    bot.start()
    yield bot
    bot.stop()


def post_pulse(bot, slack, key: str) -> tuple[int, dict]:
    """Open a pulse as its timer does, and wait for its message in Slack."""
    with bot.db.write() as session:
        pulse_id = open_pulse(key, "#ml-pulse", session=session, now=utcnow(), policy=POLICY)
    channel = slack.channel_id("#ml-pulse")
    message = bot.until(lambda: [m for m in slack.top_level_messages(channel)
                                 if f'"{pulse_id}:1"' in json.dumps(m["blocks"])],
                        what="the pulse in Slack")[0]
    return pulse_id, message


def click(bot, slack, message: dict, action: str, value: str, user: str, *,
          signed: bool = True) -> str | int:
    """A signed click on the pulse message: the ephemeral answer (or the HTTP status)."""
    name = f"click-{time.monotonic_ns()}"
    body = block_actions_body(action, value, user, message["channel"], message["ts"],
                              response_url=slack.response_url(name), block_id="pulse_scores")
    headers = slack_headers(SIGNING_SECRET if signed else "not-the-secret", body)
    response = bot.http.post("/slack/events", content=body, headers=headers)
    if response.status_code != 200:
        return response.status_code
    return bot.until(lambda: slack.responses(name), what=f"the answer to {action}")[0]["text"]


def answers(bot) -> list[tuple]:
    return [tuple(r) for r in bot.rows(
        "SELECT pulse_id, user_id, score, comment FROM pulseanswer ORDER BY pulse_id, user_id")]


def test_one_answer_per_person_a_second_click_changes_it(pulse_bot, slack):
    bot = pulse_bot
    pulse_id, message = post_pulse(bot, slack, "2026-12-01T09:00+0000")
    actions = [e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [e["value"] for e in actions] == [f"{pulse_id}:{n}" for n in range(1, 6)] + [
        str(pulse_id)]

    assert click(bot, slack, message, "pulse_score_4", f"{pulse_id}:4", ADA).startswith(
        "Thanks: your answer is 4 of 5")
    assert click(bot, slack, message, "pulse_score_2", f"{pulse_id}:2", ADA) == (
        "Changed your answer from 4 to 2 of 5.")
    assert click(bot, slack, message, "pulse_score_5", f"{pulse_id}:5", GRACE).startswith(
        "Thanks")
    assert answers(bot) == [(pulse_id, ADA, 2, ""), (pulse_id, GRACE, 5, "")]

    # Attacker-written values: refused by name, nothing changed.
    score_refused, no_pulse = "score from 1 to 5; nothing was recorded", "does not name a pulse"
    for value, why in ((f"{pulse_id}:9", score_refused), (f"{pulse_id}:0", score_refused),
                       (f"{pulse_id}:3;DROP TABLE pulse", score_refused),
                       (f"{pulse_id}:-1", score_refused), (f"{pulse_id}", score_refused),
                       (f"{pulse_id}:\u0663", score_refused),  # an Arabic-Indic 3
                       ("x:3", no_pulse), ("-1:3", no_pulse), ("0:3", no_pulse)):
        assert why in click(bot, slack, message, "pulse_score_3", value, ADA), value
    assert "closed or does not exist" in click(bot, slack, message, "pulse_score_3", "999:3",
                                               ADA)
    assert click(bot, slack, message, "pulse_score_1", f"{pulse_id}:1", ADA,
                 signed=False) == 401
    assert answers(bot) == [(pulse_id, ADA, 2, ""), (pulse_id, GRACE, 5, "")]

    # The next pulse closes this one: its buttons no longer count.
    second, _ = post_pulse(bot, slack, "2027-01-01T09:00+0000")
    assert "closed or does not exist" in click(bot, slack, message, "pulse_score_1",
                                               f"{pulse_id}:1", ADA)
    assert answers(bot) == [(pulse_id, ADA, 2, ""), (pulse_id, GRACE, 5, "")]
    assert bot.rows("SELECT id FROM pulse WHERE closed_at IS NULL") == [(second,)]
    assert slack.violations == []


def submit(bot, view: dict, text: str, user: str, **changes: str):
    body = view_submission_body({**view, **changes},
                                {"comment": {"text": {"type": "plain_text_input",
                                                      "value": text}}}, user)
    response = bot.http.post("/slack/events", content=body,
                             headers=slack_headers(SIGNING_SECRET, body))
    assert response.status_code == 200, response.text
    return response.json() if response.content else {}


def open_form(bot, slack, message: dict, pulse_id: int, user: str) -> dict:
    before = len(slack.views)
    click_body = block_actions_body("pulse_comment", str(pulse_id), user, message["channel"],
                                    message["ts"], block_id="pulse_comment")
    assert bot.http.post("/slack/events", content=click_body,
                         headers=slack_headers(SIGNING_SECRET, click_body)).status_code == 200
    return bot.until(lambda: slack.views[before:], what="the comment modal")[0]["view"]


def test_a_comment_from_the_modal_is_bounded_and_shown_escaped(pulse_bot, slack):
    bot = pulse_bot
    pulse_id, message = post_pulse(bot, slack, "2026-12-01T09:00+0000")
    view = open_form(bot, slack, message, pulse_id, ADA)
    assert view["callback_id"] == "pulse_comment" and view["private_metadata"] == str(pulse_id)
    refused = submit(bot, view, "no score yet", ADA)
    assert refused["response_action"] == "errors"
    assert "Pick a score" in refused["errors"]["comment"]

    click(bot, slack, message, "pulse_score_3", f"{pulse_id}:3", ADA)
    hostile = "<!channel> faster please <https://evil.example|click> & thanks"
    saved = submit(bot, open_form(bot, slack, message, pulse_id, ADA), hostile, ADA)
    assert saved["response_action"] == "update"
    shown = saved["view"]["blocks"][0]["text"]["text"]
    assert "&lt;!channel&gt; faster please &lt;https://evil.example|click&gt; &amp; thanks" in shown
    assert answers(bot) == [(pulse_id, ADA, 3, hostile)]  # stored as typed

    # The modal opens again with the comment so far; bounds and the pulse are checked.
    view = open_form(bot, slack, message, pulse_id, ADA)
    assert view["blocks"][0]["element"]["initial_value"] == hostile
    too_long = submit(bot, view, "x" * 1001, ADA)
    assert "at most 1000 characters" in too_long["errors"]["comment"]
    forged = submit(bot, view, "forged", ADA, private_metadata="999")
    assert "closed or does not exist" in forged["errors"]["comment"]
    assert answers(bot) == [(pulse_id, ADA, 3, hostile)]

    # The scorecard shows it: /oncall report's answer.
    name = f"report-{time.monotonic_ns()}"
    body = slash_command_body("report 7d", user_id=ADA, response_url=slack.response_url(name))
    assert bot.http.post("/slack/events", content=body,
                         headers=slack_headers(SIGNING_SECRET, body)).status_code == 200
    (report,) = bot.until(lambda: slack.responses(name), what="the report")
    assert "3.00 of 5 from 1 answer" in json.dumps(report["blocks"])
    assert slack.violations == []


def test_the_pulse_is_posted_at_its_cron_time_once(bot_env, tmp_path, slack):
    """The timer leader schedules the cron (in its time zone); when it comes round the
    pulse opens and its message is owed; fired again for the same occurrence (as at a
    leader takeover) it opens nothing more."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    app = create_app(load_settings(**{k.lower(): v for k, v in bot_env.items()},
                                   oncall_config=str(routes), timer_reconcile_seconds=0.1))
    app.state.db.upgrade()
    timers = app.state.timers

    async def scenario() -> datetime:
        task = asyncio.create_task(timers.run())
        try:
            while timers.scheduler is None or timers.scheduler.get_job("pulse") is None:
                await asyncio.sleep(0.05)
            scheduled = timers.scheduler.get_job("pulse").next_run_time
            timers.scheduler.modify_job("pulse", next_run_time=datetime.now(UTC))  # it is time
            while not rows(app, "SELECT id FROM pulse"):
                await asyncio.sleep(0.05)
            await timers.fire("pulse", 0)  # the same occurrence again
            return scheduled
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    scheduled = asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    berlin = scheduled.astimezone(ZoneInfo("Europe/Berlin"))
    assert (berlin.day, berlin.hour, berlin.minute) == (1, 10, 0)
    assert scheduled - utcnow() < timedelta(days=32)
    pulses = rows(app, "SELECT id, key, channel FROM pulse")
    posts = rows(app, "SELECT payload FROM delivery WHERE action = 'post'")
    app.state.db.dispose()
    assert len(pulses) == 1 and pulses[0][2] == "#ml-pulse"
    (payload,) = [json.loads(p) if isinstance(p, str) else p for (p,) in posts]
    assert payload["channel"] == "#ml-pulse" and "Platform pulse" in payload["text"]


def rows(app, sql: str) -> list:
    with app.state.db.reader.connect() as connection:
        return connection.exec_driver_sql(sql).all()


def test_oncall_bot_report_shows_the_latest_pulse_and_its_trend(database_url, tmp_path):
    """Through the command line over a real database: the January pulse (2, 3, 4: mean
    3.00) and the February one (4, 5, 5, 3 and a comment: mean 4.25), reported in March."""
    db = Database(database_url)
    db.upgrade()
    with db.write() as session:
        for key, opened, scores in (("jan", datetime(2026, 1, 1, 9, tzinfo=UTC), (2, 3, 4)),
                                    ("feb", datetime(2026, 2, 1, 9, tzinfo=UTC), (4, 5, 5, 3))):
            pulse = Pulse(key=key, channel="#ml-pulse", opened_at=opened)
            session.add(pulse)
            session.flush()
            for n, score in enumerate(scores):
                session.add(PulseAnswer(pulse_id=pulse.id, user_id=f"U0PERSON{n}", score=score,
                                        comment="<b>faster</b> | please" if n == 0 else "",
                                        answered_at=opened))
    db.dispose()
    command = [sys.executable, "-m", "bot.cli_reports", "report", "--since", "7d", "--until",
               "2026-03-09T00:00:00Z"]
    env = {**os.environ, "DATABASE_URL": database_url}
    result = subprocess.run([*command, "--format", "json"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["satisfaction"] == {
        "pulse_opened_at": "2026-02-01T09:00:00Z", "count": 4, "mean": 4.25,
        "previous_mean": 3.0, "trend": 1.25, "comments": ["<b>faster</b> | please"]}
    text = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120).stdout
    assert ("Satisfaction             4.25 of 5 from 4 answers; +1.25 from the pulse before "
            "(pulse of 2026-02-01)") in text
    markdown = subprocess.run([*command, "--format", "markdown", "--out", str(tmp_path)],
                              env=env, capture_output=True, text=True, timeout=120)
    # A comment is shown as text: no HTML, no Markdown syntax taking effect.
    assert "- &lt;b&gt;faster&lt;/b&gt; \\| please" in Path(markdown.stdout.strip()).read_text()
