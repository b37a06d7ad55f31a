"""Timers: escalation of unacknowledged pages, promotion of L0s, reminders, silences that
end, shift handoff — across restarts and with two replicas.

Time is moved, not waited for: timers keep realistic lengths (15 minutes, hours) and a
test makes one due by moving the incident's own clock (`triggered_at`,
`acknowledged_at`) into the past, as if that much time had gone by; the bot's
reconcile pass then reschedules the timer for a moment already past, and it fires.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from bot.clock import utcnow
from bot.intake import PARSERS
from bot.main import create_app
from bot.models import Incident, Silence
from bot.settings import load_settings
from bot.store import DeliveryPolicy
from bot.usecases.actions import Actor, acknowledge, locked
from tests.conftest import WEBHOOK_TOKEN
from tests.harness import BotProcess, example, wait_for

ESCALATION_KEY = "ESCALATIONKEY0123456789ABCDEFGHI"  # 32 characters


def routes(ack_timeout="15m", promote_after="null", reminder="null", flapping_count=3) -> str:
    return f"""
version: 1
escalation:
  l1_ack_timeout: {ack_timeout}
  l1_escalation_service_env: PLATFORM_ESCALATION_KEY
  l0_promote_after: {promote_after}
  flapping: {{count: {flapping_count}, window: 1h}}
  ack_reminder_after: {reminder}
routes:
  - name: page
    matchers: ['severity=~"critical|page"']
    tier: L1
  - name: default
    tier: L0
"""


def timer_bot(bot_env, tmp_path: Path, routing: str, name: str = "bot") -> BotProcess:
    path = tmp_path / "routes.yaml"
    path.write_text(routing)
    env = {**bot_env, "ONCALL_CONFIG": str(path), "TIMER_RECONCILE_SECONDS": "0.3",
           "PLATFORM_ESCALATION_KEY": ESCALATION_KEY}
    return BotProcess(env, log_path=tmp_path / f"{name}.log", token=WEBHOOK_TOKEN)


def age(bot, incident_id: int, *, by: timedelta, field: str = "triggered_at") -> None:
    """As if `by` had passed since the incident's `field` moment."""
    with bot.db.write() as session:
        incident = session.get(Incident, incident_id)
        setattr(incident, field, getattr(incident, field) - by)


def scheduled(bot) -> list:
    return bot.rows("SELECT id FROM apscheduler_jobs")


def fired(bot, kind: str) -> list:
    return bot.rows("SELECT id, incident_id FROM timelineentry WHERE kind = :k", k=kind)


def warning_alert(status="firing"):
    doc = example("alertmanager-firing.json" if status == "firing" else
                  "alertmanager-resolved.json")
    doc["alerts"][0]["labels"]["severity"] = "warning"
    return doc


def test_unacknowledged_l1_is_reminded_and_escalated_once(bot_env, tmp_path, slack, pagerduty):
    bot = timer_bot(bot_env, tmp_path, routes(ack_timeout="15m"))
    bot.start()
    try:
        assert bot.post("alertmanager", example("alertmanager-firing.json")).status_code == 202
        ((incident_id, key),) = bot.rows("SELECT id, key FROM incident")
        bot.until(lambda: scheduled(bot), what="the ack timer")
        assert fired(bot, "ack_timeout") == []
        age(bot, incident_id, by=timedelta(minutes=16))
        bot.until(lambda: fired(bot, "ack_timeout"), timeout=15, what="the ack timeout")
        bot.until(lambda: pagerduty.events_for(f"{key}-esc"), what="the escalation page")
        (escalation,) = pagerduty.events_for(f"{key}-esc")
        assert escalation["event"]["routing_key"] == ESCALATION_KEY
        assert escalation["event"]["payload"]["summary"].startswith("[Not acknowledged after 16m")
        bot.until(bot.outbox_settled, what="the reminder")
        (message,) = slack.top_level_messages()
        replies = [r["text"] for r in slack.thread(message["channel"], message["ts"])]
        assert any("Not acknowledged after 16m" in r for r in replies)
        bot.until(lambda: not scheduled(bot), what="the fired timer to leave the job store")
        assert len(fired(bot, "ack_timeout")) == 1
        # Resolving the incident resolves the escalation page too.
        assert bot.post("alertmanager", example("alertmanager-resolved.json")).status_code == 202
        bot.until(lambda: pagerduty.alert_status(f"{key}-esc") == "resolved",
                  what="the escalation page to resolve")
    finally:
        bot.stop()


def test_acknowledged_in_time_is_not_escalated(bot_env, tmp_path, pagerduty):
    bot = timer_bot(bot_env, tmp_path, routes(ack_timeout="15m"))
    bot.start()
    try:
        assert bot.post("alertmanager", example("alertmanager-firing.json")).status_code == 202
        ((incident_id,),) = bot.rows("SELECT id FROM incident")
        bot.until(lambda: scheduled(bot), what="the timer to be scheduled")
        with bot.db.write() as session:
            acknowledge(locked(incident_id, session=session), session=session,
                        policy=DeliveryPolicy(True, True, "#ml-alerts"), now=utcnow(),
                        actor=Actor("slack:U0TEST", "<@U0TEST>", "slack"))
        bot.until(lambda: not scheduled(bot), what="the timer to be withdrawn")
        age(bot, incident_id, by=timedelta(minutes=16))  # long past the ack timeout now
        assert fired(bot, "ack_timeout") == []
    finally:
        bot.stop()


def test_a_timer_due_while_the_bot_was_down_fires_once_after_restart(bot_env, tmp_path,
                                                                     pagerduty):
    bot = timer_bot(bot_env, tmp_path, routes(ack_timeout="15m"))
    bot.start()
    try:
        assert bot.post("alertmanager", example("alertmanager-firing.json")).status_code == 202
        bot.until(lambda: scheduled(bot), what="the timer in the job store")
        bot.kill()
        ((incident_id, key),) = bot.rows("SELECT id, key FROM incident")
        age(bot, incident_id, by=timedelta(minutes=20))  # the timer fell due while down
        assert fired(bot, "ack_timeout") == []
        bot.start()
        bot.until(lambda: fired(bot, "ack_timeout"), timeout=15, what="the missed timer")
        bot.until(lambda: pagerduty.events_for(f"{key}-esc"), what="the escalation page")
        bot.until(lambda: not scheduled(bot), what="the fired timer to leave the job store")
        bot.until(bot.outbox_settled, what="deliveries")
        assert len(fired(bot, "ack_timeout")) == 1
        assert len(pagerduty.events_for(f"{key}-esc")) == 1
    finally:
        bot.stop()


def test_two_replicas_on_postgresql_fire_each_timer_once(bot_env, tmp_path, pagerduty,
                                                         database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("replicas share a PostgreSQL database; on SQLite one process runs the bot")
    first = timer_bot(bot_env, tmp_path, routes(ack_timeout="15m"), name="first")
    second = timer_bot(bot_env, tmp_path, routes(ack_timeout="15m"), name="second")
    first.start()
    second.start()
    try:
        for name in ("A", "B", "C"):
            doc = example("alertmanager-firing.json")
            doc["alerts"][0]["labels"]["alertname"] = f"Replica{name}"
            target = first if name != "B" else second
            assert target.post("alertmanager", doc).status_code == 202
        first.until(lambda: len(scheduled(first)) == 3, what="three timers")
        for (incident_id,) in first.rows("SELECT id FROM incident"):
            age(first, incident_id, by=timedelta(minutes=16))
        first.until(lambda: len(fired(first, "ack_timeout")) == 3, timeout=20,
                    what="three escalations")
        first.until(lambda: not scheduled(first), what="the fired timers to leave the job store")
        first.until(first.outbox_settled, what="deliveries")
        assert len(fired(first, "ack_timeout")) == 3
        assert len([e for e in pagerduty.events if e["dedup_key"].endswith("-esc")]) == 3
        leaders = ["now runs the timers" in b.log() for b in (first, second)]
        assert leaders.count(True) == 1
        # The leader dies: the other replica takes the timers over.
        leader, other = (first, second) if leaders[0] else (second, first)
        leader.kill()
        doc = example("alertmanager-firing.json")
        doc["alerts"][0]["labels"]["alertname"] = "AfterTakeover"
        assert other.post("alertmanager", doc).status_code == 202
        ((late,),) = other.rows("SELECT id FROM incident WHERE group_key LIKE '%AfterTakeover%'")
        age(other, late, by=timedelta(minutes=16))
        other.until(lambda: len(fired(other, "ack_timeout")) == 4, timeout=20,
                    what="the escalation after takeover")
        assert "now runs the timers" in other.log()
    finally:
        first.stop()
        second.stop()


def test_a_flapping_l0_is_promoted_and_paged_once(bot_env, tmp_path, pagerduty, slack):
    bot = timer_bot(bot_env, tmp_path, routes(flapping_count=3))
    bot.start()
    try:
        for _ in range(4):
            assert bot.post("alertmanager", warning_alert()).status_code == 202
            assert bot.post("alertmanager", warning_alert("resolved")).status_code == 202
        assert bot.post("alertmanager", warning_alert()).status_code == 202
        bot.until(bot.outbox_settled, what="deliveries")
        ((key, tier, reopened),) = bot.rows("SELECT key, tier, reopen_count FROM incident")
        assert (tier, reopened) == ("L1", 4)
        (promotion,) = bot.rows("SELECT detail FROM timelineentry WHERE kind = 'promoted'")
        assert "flapping" in promotion.detail
        triggers = [e for e in pagerduty.events_for(key)
                    if e["event"]["event_action"] == "trigger"]
        assert len(triggers) == 2  # the promotion, and the reopen after it (an L1 by then)
    finally:
        bot.stop()


def test_an_l0_still_open_is_promoted(bot_env, tmp_path, pagerduty):
    bot = timer_bot(bot_env, tmp_path, routes(promote_after="30m"))
    bot.start()
    try:
        assert bot.post("alertmanager", warning_alert()).status_code == 202
        ((incident_id, key),) = bot.rows("SELECT id, key FROM incident")
        bot.until(lambda: scheduled(bot), what="the promotion timer")
        age(bot, incident_id, by=timedelta(minutes=31))
        bot.until(lambda: bot.rows("SELECT id FROM incident WHERE tier = 'L1'"), timeout=15,
                  what="the promotion")
        bot.until(lambda: pagerduty.events_for(key), what="the page")
        (promotion,) = bot.rows("SELECT detail FROM timelineentry WHERE kind = 'promoted'")
        assert "still open after 31m" in promotion.detail
    finally:
        bot.stop()


def test_the_acknowledger_is_reminded_of_a_long_open_incident(bot_env, tmp_path, slack,
                                                              pagerduty):
    bot = timer_bot(bot_env, tmp_path, routes(ack_timeout="null", reminder="4h"))
    bot.start()
    try:
        assert bot.post("alertmanager", example("alertmanager-firing.json")).status_code == 202
        ((incident_id,),) = bot.rows("SELECT id FROM incident")
        with bot.db.write() as session:
            acknowledge(locked(incident_id, session=session), session=session, now=utcnow(),
                        policy=DeliveryPolicy(True, True, "#ml-alerts"),
                        actor=Actor("slack:U0ACKER1", "<@U0ACKER1>", "slack"))
        bot.until(lambda: scheduled(bot), what="the reminder timer")
        age(bot, incident_id, by=timedelta(hours=5), field="acknowledged_at")
        bot.until(lambda: fired(bot, "ack_reminder"), timeout=15, what="the reminder")
        bot.until(bot.outbox_settled, what="the thread reply")
        (message,) = slack.top_level_messages()
        replies = [r["text"] for r in slack.thread(message["channel"], message["ts"])]
        assert any(r.startswith("<@U0ACKER1>: incident") and "still open, 5h" in r
                   for r in replies)
    finally:
        bot.stop()


def test_a_silence_that_ends_is_announced(bot_env, tmp_path, slack):
    bot = timer_bot(bot_env, tmp_path, routes())
    bot.start()
    try:
        result = subprocess.run([sys.executable, "-m", "bot", "silence", "add", 'model="churn"',
                                 "--for", "2h", "--comment", "deploy"],
                                env={**bot.env, "PATH": "/usr/bin:/bin"}, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        bot.until(lambda: scheduled(bot), what="the silence's end timer")
        with bot.db.write() as session:  # as if the two hours were nearly over
            silence = session.get(Silence, 1)
            silence.ends_at = utcnow() + timedelta(seconds=1)
        wait_for(lambda: [m for m in slack.top_level_messages()
                          if "Silence #1 has ended" in m["text"]], timeout=15,
                 what="the announcement")
    finally:
        bot.stop()


def app_with_routes(bot_env, tmp_path, extra: str):
    """The bot's app, in this process, with the test routing file plus `extra`."""
    path = tmp_path / "routes.yaml"
    path.write_text(routes() + extra)
    app = create_app(load_settings(**{k.lower(): v for k, v in bot_env.items()},
                                   oncall_config=str(path)))
    app.state.db.upgrade()
    return app


async def ingest_example(app) -> None:
    await app.state.pipeline.ingest(PARSERS["alertmanager"](example("alertmanager-firing.json")))


def test_handoff_digest_names_the_shift_the_open_incidents_and_who_is_on_call(
        bot_env, tmp_path, pagerduty):
    pagerduty.set_oncalls([{"user_id": "PGRACE1", "user_name": "Grace Hopper",
                            "email": "grace@example.com", "escalation_policy_id": "PEP0001",
                            "schedule_id": "PSCHED1", "escalation_level": 1}])
    app = app_with_routes(bot_env, tmp_path,
                          'handoff: {cron: "0 9 * * 1-5", timezone: Europe/London}\n')

    async def scenario() -> str:
        await ingest_example(app)
        return await app.state.timers.handoff_digest()

    digest = asyncio.run(scenario())
    app.state.db.dispose()
    assert "*Shift handoff*" in digest
    assert "1 incident(s) in the last 24h" in digest and "Still open: 1" in digest
    assert "ModelErrorRateHigh" in digest and "Grace Hopper (level 1)" in digest


def test_weekly_report_is_posted_to_its_channel(bot_env, tmp_path):
    app = app_with_routes(bot_env, tmp_path,
                          'weekly_report: {cron: "0 9 * * 1", channel: "#ml-platform"}\n')

    async def scenario() -> None:
        await ingest_example(app)
        await app.state.timers.fire("weekly_report", 0)

    asyncio.run(scenario())
    with app.state.db.reader.connect() as connection:
        ((payload,),) = connection.exec_driver_sql(
            "SELECT payload FROM delivery WHERE action = 'post'").all()
    app.state.db.dispose()
    payload = json.loads(payload) if isinstance(payload, str) else payload
    assert payload["channel"] == "#ml-platform"
    assert "1 incidents" in payload["text"] and payload["blocks"]
