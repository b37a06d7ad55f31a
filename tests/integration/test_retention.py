"""Retention prunes what is past its time and nothing else, on SQLite and PostgreSQL.

Rows of every kind are written old (past the cutoff) and new, for open and resolved
incidents; `oncall-bot db prune` (and the bot's own periodic prune) must leave
exactly the expected rows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from bot import store
from bot.db import Database
from bot.models import (
    AlertOccurrence,
    Delivery,
    Incident,
    RunbookRun,
    StepResult,
    TimelineEntry,
    WebhookReceipt,
)
from bot.retention import _OLD_ROWS
from tests.harness import BotProcess

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=500)  # past RETENTION_DAYS=400 and INCIDENT_RETENTION_DAYS=420
MIDDLE = NOW - timedelta(days=410)  # past 400, within 420
NEW = NOW - timedelta(days=10)


def oncall_bot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def _incident(session, name: str, *, opened: datetime, resolved: datetime | None) -> int:
    incident = Incident(
        key=f"key-{name}", group_key=f"alertname={name}", group_hash=f"hash-{name}",
        open_group_hash=None if resolved else f"hash-{name}", title=name,
        state="resolved" if resolved else "triggered", tier="L0", route="default",
        source="alertmanager", triggered_at=opened, last_alert_at=resolved or opened,
        resolved_at=resolved)
    session.add(incident)
    session.flush()
    return incident.id


def _rows_of(session, incident_id: int | None, name: str, *, at: datetime,
             occurrences: int = 1) -> None:
    """An occurrence (or several), a timeline entry, a sent, a failed and a pending
    delivery, a run with a step result, all dated `at`."""
    if incident_id is not None:
        for n in range(occurrences):
            session.add(AlertOccurrence(incident_id=incident_id, fingerprint=f"{name}-{n}",
                                        status="firing", source="alertmanager",
                                        first_seen_at=at, last_seen_at=at))
        session.add(TimelineEntry(incident_id=incident_id, at=at, actor="bot", kind="opened",
                                  detail=name))
    for state in ("sent", "failed", "pending"):
        session.add(Delivery(incident_id=incident_id, target="slack", action="post",
                             payload={"name": name}, state=state, created_at=at,
                             next_attempt_at=at, sent_at=at if state == "sent" else None))
    run = RunbookRun(incident_id=incident_id, runbook="diagnose", purpose="diagnostics",
                     status="succeeded", requested_by="bot", created_at=at)
    session.add(run)
    session.flush()
    session.add(StepResult(run_id=run.id, position=0, name=f"step-{name}", kind="promql",
                           status="ok", started_at=at, duration_s=0.1, output=name))


def _seed(database_url: str) -> dict[str, int]:
    db = Database(database_url)
    db.upgrade()
    with db.write() as session:
        ids = {
            # resolved 500 days ago: its occurrences go; with incident retention, all of it
            "resolved_old": _incident(session, "resolved_old", opened=OLD, resolved=OLD),
            # resolved 410 days ago: its occurrences go; kept by a 420-day incident retention
            "resolved_middle": _incident(session, "resolved_middle", opened=MIDDLE,
                                         resolved=MIDDLE),
            # open since 500 days: nothing of an open incident's record goes
            "open_old": _incident(session, "open_old", opened=OLD, resolved=None),
            # opened 500 days ago, resolved 10 days ago: its old occurrences stay
            "resolved_new": _incident(session, "resolved_new", opened=OLD, resolved=NEW),
        }
        # More old occurrences than one batch holds, so the prune takes several.
        _rows_of(session, ids["resolved_old"], "resolved_old", at=OLD, occurrences=2100)
        _rows_of(session, ids["resolved_middle"], "resolved_middle", at=MIDDLE)
        _rows_of(session, ids["open_old"], "open_old", at=OLD)
        _rows_of(session, ids["resolved_new"], "resolved_new", at=OLD)
        _rows_of(session, ids["resolved_new"], "resolved_new_recent", at=NEW)
        _rows_of(session, None, "no_incident_old", at=OLD)
        _rows_of(session, None, "no_incident_new", at=NEW)
        session.add(WebhookReceipt(id="receipt-old", received_at=OLD))
        session.add(WebhookReceipt(id="receipt-new", received_at=NEW))
    db.dispose()
    return ids


def _state(database_url: str) -> dict[str, object]:
    db = Database(database_url)
    try:
        with db.reader.connect() as connection:
            def rows(sql: str) -> list[tuple]:
                return sorted(tuple(row) for row in connection.execute(text(sql)))
            return {
                "incidents": rows("SELECT title FROM incident"),
                "occurrences": rows("SELECT i.title, count(*) FROM alertoccurrence o "
                                    "JOIN incident i ON i.id = o.incident_id GROUP BY i.title"),
                "timeline": rows("SELECT detail FROM timelineentry"),
                "deliveries": sorted(
                    ((payload if isinstance(payload, dict) else json.loads(payload))["name"],
                     state)
                    for payload, state in connection.execute(
                        text("SELECT payload, state FROM delivery"))),
                "runs": rows("SELECT count(*) FROM runbookrun"),
                "steps": rows("SELECT name FROM stepresult"),
                "receipts": rows("SELECT id FROM webhookreceipt"),
            }
    finally:
        db.dispose()


def _deliveries(*names_states: tuple[str, str]) -> list[tuple]:
    return sorted(names_states)


ALL_NAMES = ("resolved_old", "resolved_middle", "open_old", "resolved_new",
             "resolved_new_recent", "no_incident_old", "no_incident_new")
OLD_NAMES = ("resolved_old", "resolved_middle", "open_old", "resolved_new", "no_incident_old")


def test_prune_deletes_old_records_of_every_kind_and_keeps_incidents_and_open_ones(
        database_url):
    _seed(database_url)
    pruned = oncall_bot("db", "prune", env={"DATABASE_URL": database_url,
                                            "RETENTION_DAYS": "400"})
    assert pruned.returncode == 0, pruned.stderr
    assert "2101 occurrences" in pruned.stdout  # resolved_old's 2,100 and resolved_middle's

    state = _state(database_url)
    assert state["incidents"] == sorted(
        (name,) for name in ("resolved_old", "resolved_middle", "open_old", "resolved_new"))
    # Only the open incident's and the recently resolved incident's occurrences are left.
    assert state["occurrences"] == [("open_old", 1), ("resolved_new", 2)]
    # Timelines are the record: all kept.
    assert state["timeline"] == sorted((name,) for name in ALL_NAMES
                                       if not name.startswith("no_incident"))
    # Old sent and failed deliveries go whatever their incident; pending ones never.
    assert state["deliveries"] == _deliveries(
        *((name, "pending") for name in ALL_NAMES),
        *((name, state) for name in ("resolved_new_recent", "no_incident_new")
          for state in ("sent", "failed")))
    assert state["runs"] == [(len(ALL_NAMES),)]  # runs are kept; their old step results go
    assert state["steps"] == [("step-no_incident_new",), ("step-resolved_new_recent",)]
    assert state["receipts"] == [("receipt-new",)]

    again = oncall_bot("db", "prune", env={"DATABASE_URL": database_url,
                                           "RETENTION_DAYS": "400"})
    assert again.returncode == 0 and "deleted nothing" in again.stdout
    assert _state(database_url) == state


def test_incident_retention_deletes_old_resolved_incidents_with_all_that_refers_to_them(
        database_url):
    _seed(database_url)
    before = _state(database_url)
    pruned = oncall_bot("db", "prune", env={"DATABASE_URL": database_url,
                                            "RETENTION_DAYS": "400",
                                            "INCIDENT_RETENTION_DAYS": "420"})
    assert pruned.returncode == 0, pruned.stderr

    state = _state(database_url)
    # resolved_old goes; the open one opened as long ago and the newer ones stay.
    assert state["incidents"] == sorted(
        (name,) for name in ("resolved_middle", "open_old", "resolved_new"))
    assert state["timeline"] == [t for t in before["timeline"] if t != ("resolved_old",)]
    assert "resolved_old" not in {name for name, _ in state["deliveries"]}
    assert ("open_old", "pending") in state["deliveries"]
    assert state["runs"] == [(len(ALL_NAMES) - 1,)]
    assert state["occurrences"] == [("open_old", 1), ("resolved_new", 2)]


def test_the_bot_prunes_periodically(bot_env, tmp_path):
    _seed(bot_env["DATABASE_URL"])
    bot = BotProcess({**bot_env, "RETENTION_DAYS": "400", "RETENTION_INTERVAL_SECONDS": "0.2"},
                     log_path=tmp_path / "bot.log", token=None)
    bot.start()
    try:
        bot.until(lambda: [r.id for r in bot.rows("SELECT id FROM webhookreceipt")]
                  == ["receipt-new"], timeout=30, what="the periodic prune")
        bot.until(lambda: not bot.rows("SELECT id FROM stepresult WHERE name = 'step-open_old'"),
                  timeout=30, what="old step results pruned")
        assert [r.title for r in bot.rows("SELECT title FROM incident ORDER BY title")] == sorted(
            ("resolved_old", "resolved_middle", "open_old", "resolved_new"))
    finally:
        bot.stop()


_PLANS = {
    # statement, its parameters, the index SQLite must search (not scan)
    "open incident counts": (store.reads._OPEN_COUNTS, {}, "ix_incident_state"),
    "reopen candidates": (store.intake._REOPENABLE, {"hashes": ["a", "b"], "since": NOW},
                          "ix_incident_reopen"),
    **{f"old {kind}": (statement, {"cutoff": NOW, "limit": 1000}, index)
       for (kind, (_table, statement)), index in zip(_OLD_ROWS.items(), (
           "ix_alertoccurrence_first_seen_at", "ix_delivery_created_at",
           "ix_webhookreceipt_received_at", "ix_stepresult_started_at"), strict=True)},
}


@pytest.mark.parametrize("query", sorted(_PLANS))
def test_scrape_intake_and_prune_queries_search_an_index_not_the_record(database_url, query):
    """EXPLAIN: with no statistics (SQLite: the bot never runs ANALYZE) each query reads a
    range of the index named, not every incident or delivery ever stored; on PostgreSQL,
    with sequential scans priced out (tiny tables favour them), an index answers it."""
    statement, params, index = _PLANS[query]
    db = Database(database_url)
    db.upgrade()
    try:
        with db.writer.connect() as connection:
            compiled = statement.compile(dialect=connection.dialect)
            expanded = compiled.construct_expanded_state({**compiled.params, **params})
            values = expanded.parameters
            if db.is_sqlite:
                plan = connection.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN {expanded.statement}",
                    tuple(values[k] for k in expanded.positiontup))
                lines = [row[-1] for row in plan]
            else:
                connection.exec_driver_sql("SET enable_seqscan = off")
                lines = [row[0] for row in connection.exec_driver_sql(
                    f"EXPLAIN {expanded.statement}", values)]
    finally:
        db.dispose()
    if db.is_sqlite:
        assert re.match(rf"SEARCH \w+ USING (COVERING )?INDEX {index} \(", lines[0]), lines
        assert not any(line.startswith("SCAN") for line in lines), lines
    else:
        assert not any("Seq Scan" in line for line in lines), lines
