"""The scorecard's PNG chart reaches Slack (issue 13 item 6): `/oncall report` and the
weekly post upload it with files.getUploadURLExternal, a POST of the bytes, and
files.completeUploadExternal, through the outbox, once, even across a crash.

What Slack received is read from the stand-in, which checks each call against Slack's
documentation and keeps the uploaded bytes.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from bot.intake import PARSERS
from bot.main import create_app
from bot.settings import load_settings
from tests.conftest import WEBHOOK_TOKEN
from tests.harness import BotProcess, example
from tests.standins.signing import slack_headers, slash_command_body
from tests.standins.slack import PNG_SIGNATURE

SIGNING_SECRET = "slack-signing-secret-for-tests"
ASKER = "U0ASKER01"
CHANNEL = "C0REPORTS1"
ROUTES = """
version: 1
weekly_report: {cron: "0 9 * * 1", channel: "#ml-platform"}
routes:
  - name: page
    matchers: ['severity="critical"']
    tier: L1
  - name: default
    tier: L0
"""


def report_bot(bot_env, tmp_path: Path, **extra: str) -> BotProcess:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    env = {**bot_env, "ONCALL_CONFIG": str(routes), "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           **extra}
    return BotProcess(env, log_path=tmp_path / "bot.log", token=WEBHOOK_TOKEN)


def ask_report(bot, slack) -> dict:
    name = f"report-{time.monotonic_ns()}"
    body = slash_command_body("report 7d", user_id=ASKER, channel_id=CHANNEL,
                              response_url=slack.response_url(name))
    response = bot.http.post("/slack/events", content=body,
                             headers=slack_headers(SIGNING_SECRET, body))
    assert response.status_code == 200, response.text
    (answer,) = bot.until(lambda: slack.responses(name), what="the report")
    return answer


def test_oncall_report_uploads_its_png_chart_to_the_channel(bot_env, tmp_path, slack):
    bot = report_bot(bot_env, tmp_path)
    bot.start()
    try:
        assert bot.post("alertmanager", example("alertmanager-firing.json")).status_code == 202
        answer = ask_report(bot, slack)
        assert answer["response_type"] == "ephemeral" and answer["blocks"]
        (chart,) = bot.until(lambda: slack.uploads(CHANNEL), what="the chart in Slack")
        bot.until(bot.outbox_settled, what="the upload's delivery to be recorded")
    finally:
        bot.stop()
    assert chart["content"].startswith(PNG_SIGNATURE) and len(chart["content"]) > 1000
    assert chart["name"].startswith("scorecard-") and chart["name"].endswith(".png")
    assert chart["title"].startswith("On-call scorecard")
    assert chart["initial_comment"].startswith("Scorecard chart") and f"<@{ASKER}>" in chart[
        "initial_comment"]
    # The three documented steps, in order; sharing needs membership, so the bot joined
    # the (public) channel when Slack said it was not in it, and completed again.
    calls = [r for r in slack.calls()
             if r.name.startswith(("files.", "upload_url", "conversations.join"))]
    calls = calls[[r.name for r in calls].index("files.getUploadURLExternal"):]
    assert [r.name for r in calls] == [
        "files.getUploadURLExternal", "upload_url", "files.completeUploadExternal",
        "conversations.join", "files.completeUploadExternal"]
    assert calls[2].response["error"] == "not_in_channel" and calls[4].response["ok"]
    (issued,) = slack.calls("files.getUploadURLExternal")
    assert int(issued.query["length"][0]) == len(chart["content"])
    (upload,) = slack.calls("upload_url")
    assert "authorization" not in upload.headers  # the token goes to the Web API only
    assert slack.violations == []


def test_a_crash_after_slack_shared_the_chart_does_not_share_it_again(bot_env, tmp_path,
                                                                      slack):
    """completeUploadExternal takes effect, its answer never reaches the bot (killed):
    the restarted bot finds the chart in the channel by its file name and does not
    upload it a second time."""
    bot = report_bot(bot_env, tmp_path)
    bot.start()
    try:
        slack.stall("files.completeUploadExternal")
        ask_report(bot, slack)
        bot.until(lambda: slack.uploads(CHANNEL), what="the chart shared, its answer held")
        bot.kill()
        slack.release()
        bot.start()
        bot.until(bot.outbox_settled, timeout=20, what="the upload's delivery after restart")
        assert "already shared" in bot.log()
    finally:
        bot.stop()
    assert len(slack.uploads(CHANNEL)) == 1
    assert [r.response["ok"] for r in slack.calls("files.completeUploadExternal")] == [
        False, True]  # not_in_channel, then (after joining) the share whose answer was lost
    assert len(slack.calls("files.getUploadURLExternal")) == 1
    assert slack.violations == []


def test_without_matplotlib_the_report_goes_without_chart_and_says_so(bot_env, tmp_path,
                                                                     slack):
    stub = tmp_path / "no-matplotlib" / "matplotlib"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text('raise ImportError("matplotlib left out on purpose")\n')
    # Found first on the path: `import matplotlib` fails as where it is not installed.
    path = os.pathsep.join([str(stub.parent), *filter(None, os.environ.get(
        "PYTHONPATH", "").split(os.pathsep))])
    bot = report_bot(bot_env, tmp_path, PYTHONPATH=path)
    bot.start()
    try:
        answer = ask_report(bot, slack)
        assert answer["blocks"]  # the report itself is unaffected
        bot.until(lambda: "without its chart" in bot.log(), what="the log line")
        bot.until(bot.outbox_settled, what="deliveries")
    finally:
        bot.stop()
    assert "pip install 'oncall-bot[charts]'" in bot.log()
    assert slack.uploads() == [] and slack.calls("files.getUploadURLExternal") == []


def test_the_weekly_post_shares_its_chart_after_the_post(bot_env, tmp_path, slack):
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    app = create_app(load_settings(**{k.lower(): v for k, v in bot_env.items()},
                                   oncall_config=str(routes)))

    async def scenario() -> None:
        async with app.router.lifespan_context(app):
            await app.state.pipeline.ingest(
                PARSERS["alertmanager"](example("alertmanager-firing.json")))
            await app.state.timers.fire("weekly_report", 0)
            channel = slack.channel_id("#ml-platform")
            while not slack.uploads(channel):  # bounded by the timeout below
                await asyncio.sleep(0.05)

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    channel = slack.channel_id("#ml-platform")
    post, share = slack.top_level_messages(channel)
    assert post["text"].startswith("On-call scorecard") and post["blocks"]
    assert share["files"][0]["mimetype"] == "image/png"
    (chart,) = slack.uploads(channel)
    assert chart["ts"] == share["ts"] and chart["content"].startswith(PNG_SIGNATURE)
    assert chart["initial_comment"].startswith("Scorecard chart")
    assert slack.violations == []
