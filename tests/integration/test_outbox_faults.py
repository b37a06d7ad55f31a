"""The outbox under faults: a poison delivery is given up after its budget and holds
back nothing else, an undeliverable page is loud in Slack, /metrics shows the outbox
per target, and /readyz (not /healthz) follows the database and its schema.
Real bot processes on SQLite and PostgreSQL, the Slack and PagerDuty stand-ins."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bot import store
from bot.clock import utcnow
from bot.db import known_revisions
from bot.domain.delivery import Queued, may_go
from bot.models import Delivery
from tests.conftest import WEBHOOK_TOKEN
from tests.harness import BotProcess
from tests.integration.test_outbox_queue import alerts, apply, database

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


def _alert(name: str, severity: str = "critical") -> dict:
    return {"version": "4", "status": "firing", "receiver": "oncall-bot",
            "groupKey": f'{{}}:{{alertname="{name}"}}',
            "alerts": [{"status": "firing", "labels": {"alertname": name, "severity": severity,
                                                       "model": "churn"},
                        "annotations": {"summary": f"{name} fired"},
                        "startsAt": "2026-11-30T10:00:00Z", "fingerprint": f"fp-{name}"}]}


def _metric(body: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(f"{name}{{{wanted}}}" if labels else name) + r" (\S+)"
    found = re.search(rf"^{pattern}$", body, re.MULTILINE)
    return float(found.group(1)) if found else None


def _start(env: dict[str, str], tmp_path: Path, name: str = "bot.log") -> BotProcess:
    bot = BotProcess(env, log_path=tmp_path / name, token=WEBHOOK_TOKEN)
    bot.start()
    return bot


def test_a_note_whose_trigger_was_refused_is_given_up_after_the_budget(
        bot_env, tmp_path, slack, pagerduty):
    """The issue's poison row: diagnostics owed as a PagerDuty note, but PagerDuty refused
    the page, so the note finds no incident for its key; it used to retry for ever."""
    runbooks = tmp_path / "runbooks"
    runbooks.mkdir()
    (runbooks / "quick-look.yaml").write_text(QUICK_LOOK)
    pagerduty.fail("/v2/enqueue", status=400)
    bot = _start({**bot_env, "ONCALL_RUNBOOKS": str(runbooks), "DELIVERY_RETRY_BUDGET": "3s",
                  "PAGERDUTY_FROM_EMAIL": "oncall-bot@example.com"}, tmp_path)
    try:
        assert bot.post("alertmanager", _alert("Drift")).status_code == 202
        bot.until(lambda: bot.rows("SELECT id FROM delivery WHERE target = 'pagerduty_rest' "
                                   "AND state = 'failed'"), timeout=30, what="the note given up")
        bot.until(bot.outbox_settled, timeout=15, what="the rest of the outbox")
        (note,) = bot.rows("SELECT last_error, attempts FROM delivery "
                           "WHERE target = 'pagerduty_rest'")
        assert note.last_error == ("gave up on pagerduty_rest note after 3s: "
                                   "PagerDuty has no incident for this key yet")
        assert note.attempts > 1 and pagerduty.notes == []
        failed = [r.detail for r in bot.rows(
            "SELECT detail FROM timelineentry WHERE kind = 'delivery_failed' ORDER BY id")]
        assert failed[0].startswith("pagerduty trigger refused")
        assert failed[1] == note.last_error
        (incident,) = bot.rows("SELECT slack_channel_id, slack_ts FROM incident")
        replies = [m["text"] for m in slack.thread(incident.slack_channel_id, incident.slack_ts)]
        assert any(r.startswith(":warning: Not delivered: pagerduty trigger refused")
                   for r in replies)
        assert f":warning: Not delivered: {note.last_error}" in replies
        metrics = bot.http.get("/metrics").text
        assert _metric(metrics, "oncall_deliveries", target="pagerduty_rest",
                       state="failed") == 1
        assert _metric(metrics, "oncall_delivery_attempts_total", target="pagerduty_rest",
                       outcome="expired") == 1
    finally:
        bot.stop()


def test_a_poison_row_holds_back_only_what_depends_on_it(database_url):
    """The claim query and `delivery.may_go` agree, and a stuck note, reply or page of
    one incident leaves that incident's other deliveries due."""
    db = database(database_url)
    (first,) = apply(db, alerts("fraud", "critical")).opened  # a page and a Slack post
    now = utcnow()
    with db.write() as session:
        def owe(target: str, action: str, incident: int = first, **payload) -> None:
            session.add(Delivery(incident_id=incident, target=target, action=action,
                                 payload=payload, created_at=now, next_attempt_at=now))
        owe("pagerduty_rest", "note", incident_key="refused", content="stuck")  # poison
        owe("pagerduty_rest", "note", incident_key="k", content="later")
        owe("pagerduty", "resolve", dedup_key="k")  # waits for its trigger
        owe("slack", "reply", text="waits for the post")
    with db.read() as session:
        pending = list(session.exec(text(
            "SELECT id, incident_id, target, action FROM delivery WHERE state = 'pending' "
            "ORDER BY id")).all())
        claimable = store.due_deliveries(session=session, now=utcnow(), limit=50)
    expected = may_go([Queued(*row) for row in pending])
    assert sorted(d.id for d in claimable) == [q.id for q in expected]
    assert sorted((d.target, d.action) for d in claimable) == [
        ("pagerduty", "trigger"), ("pagerduty_rest", "note"), ("pagerduty_rest", "note"),
        ("slack", "sync")]
    with db.write() as session:  # the post went out: the reply no longer waits
        session.exec(text("UPDATE incident SET slack_channel_id = 'C1', slack_ts = '1.0'"))
    with db.read() as session:
        actions = [d.action for d in store.due_deliveries(session=session, now=utcnow(),
                                                          limit=50)]
    assert "reply" in actions and "resolve" not in actions


def test_an_undeliverable_page_is_loud_in_slack_and_in_metrics_then_delivered_once(
        bot_env, tmp_path, slack, pagerduty):
    pagerduty.down()
    env = {**bot_env, "PAGE_UNDELIVERED_ALERT_AFTER": "2s",
           "PAGE_UNDELIVERED_MENTION": "S0123ABC"}
    bot = _start(env, tmp_path)
    try:
        assert bot.post("alertmanager", _alert("Unpaged <!channel>")).status_code == 202

        def loud() -> list[dict]:
            return [m for m in slack.top_level_messages()
                    if "PAGE NOT DELIVERED" in m.get("text", "")]

        (message,) = bot.until(loud, timeout=20, what="the PAGE NOT DELIVERED message")
        (incident,) = bot.rows("SELECT id, slack_channel_id FROM incident")
        assert message["text"].startswith(
            ":rotating_light: *PAGE NOT DELIVERED* <!subteam^S0123ABC>")
        assert f"#{incident.id} Unpaged &lt;!channel&gt;" in message["text"]
        assert slack.channel_id("#ml-alerts") == incident.slack_channel_id
        metrics = bot.http.get("/metrics").text
        assert _metric(metrics, "oncall_pages_undelivered") == 1
        assert _metric(metrics, "oncall_delivery_oldest_pending_seconds",
                       target="pagerduty") >= 2
        assert _metric(metrics, "oncall_deliveries", target="pagerduty", state="pending") == 1
        for target in ("slack", "pagerduty_rest"):
            assert _metric(metrics, "oncall_delivery_oldest_pending_seconds",
                           target=target) is not None

        bot.kill()  # announced once: a restart within 15 minutes does not say it again
        bot.start()
        (alerted,) = bot.rows("SELECT alerted_at FROM delivery WHERE target = 'pagerduty'")
        assert alerted.alerted_at is not None
        pagerduty.up()
        bot.until(bot.outbox_settled, timeout=20, what="the page once PagerDuty is back")
        assert len(pagerduty.triggers()) == 1
        assert len(loud()) == 1
        metrics = bot.http.get("/metrics").text
        assert _metric(metrics, "oncall_pages_undelivered") == 0
        assert _metric(metrics, "oncall_delivery_oldest_pending_seconds",
                       target="pagerduty") == 0
    finally:
        bot.stop()


def _stamp(bot: BotProcess, revision: str) -> None:
    with bot.db.writer.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})


def test_readyz_follows_the_database_and_schema_and_healthz_does_not(bot_env, tmp_path,
                                                                      database_url):
    bot = _start(bot_env, tmp_path)
    head, _ = known_revisions()
    try:
        assert bot.http.get("/readyz").json() == {"status": "ok"}
        _stamp(bot, "9999")  # a newer replica migrated: this one still serves
        assert bot.http.get("/readyz").status_code == 200
        bot.kill()
        bot.start()  # and it starts on the newer schema without migrating
        assert "newer than this code knows; not migrating" in bot.log()
        assert bot.http.get("/readyz").status_code == 200
        _stamp(bot, "0005")  # behind what this code needs
        reply = bot.http.get("/readyz")
        assert reply.status_code == 503
        assert reply.json() == {"status": f"the schema is at revision 0005, older than {head}"}
        assert bot.http.get("/healthz").status_code == 200
        _stamp(bot, head)
        assert bot.http.get("/readyz").status_code == 200
        if not database_url.startswith("postgresql"):
            return
        bot.db.dispose()
        admin = make_url(database_url).set(database="postgres").render_as_string(
            hide_password=False)
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                f'DROP DATABASE "{make_url(database_url).database}" WITH (FORCE)')
        assert bot.http.get("/readyz").json() == {"status": "database unavailable"}
        assert bot.http.get("/readyz").status_code == 503
        assert bot.http.get("/healthz").json() == {"status": "ok"}
    finally:
        bot.stop()


@pytest.mark.parametrize("query", ["pending", "failed", "pages"])
def test_metrics_queries_read_an_index_not_the_table(database_url, query):
    """EXPLAIN: each scrape query is answerable from an index over the rows it counts
    (on PostgreSQL with sequential scans priced out, since tiny tables favour them)."""
    db = database(database_url)
    statement, params = {
        "pending": (store.outbox._PENDING_OF, {"target": "slack"}),
        "failed": (store.outbox._FAILED_OF, {"target": "slack"}),
        "pages": (store.outbox._PAGES_OWED_SINCE, {"since": utcnow() - timedelta(minutes=5)}),
    }[query]
    with db.writer.connect() as connection:
        compiled = statement.compile(dialect=connection.dialect)
        sql = str(compiled)
        values = {**compiled.params, **params}
        if db.is_sqlite:
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}",
                                              tuple(values[k] for k in compiled.positiontup))
            lines = [row[-1] for row in plan]
        else:
            connection.exec_driver_sql("SET enable_seqscan = off")
            plan = connection.exec_driver_sql(f"EXPLAIN {sql}", values)
            lines = [row[0] for row in plan]
    if db.is_sqlite:  # SEARCH: a range of the index; SCAN would walk all of it
        (line,) = lines
        assert re.match(r"SEARCH delivery USING (COVERING )?INDEX ix_delivery_(pending|queue) "
                        r"\((state=\? AND )?target=\?", line), lines
    else:
        assert any(re.search(r"Index (Only )?Scan using ix_delivery_(pending|queue)", line)
                   for line in lines), lines
        assert not any("Seq Scan" in line for line in lines), lines
