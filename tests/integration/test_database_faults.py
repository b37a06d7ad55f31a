"""Database faults: an exhausted pool is a 503, the migration lock is waited for, the
timer leader stops scheduling once it cannot prove it holds its lock, and (only with
TEST_PG_RESTART=1, since it restarts the shared server) PostgreSQL restarted under load
costs 503s with Retry-After, never a 500, and afterwards everything owed is delivered once.
"""

from __future__ import annotations

import os
import subprocess
import threading

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import QueuePool

from bot.db import is_transient
from bot.timers import LEADER_APPLICATION_NAME
from tests.conftest import WEBHOOK_TOKEN
from tests.harness import BotProcess, wait_for

MIGRATION_LOCK = 7305_0001
LEADER_LOCK = 7305_0002
PG_CLUSTER = os.environ.get("TEST_PG_CLUSTER", "15 main")


def _alert(name: str) -> dict:
    return {"version": "4", "status": "firing", "receiver": "oncall-bot",
            "groupKey": f'{{}}:{{alertname="{name}"}}',
            "alerts": [{"status": "firing", "labels": {"alertname": name, "severity": "critical",
                                                       "model": "churn"},
                        "annotations": {"summary": f"{name} fired"},
                        "startsAt": "2026-11-30T10:00:00Z", "fingerprint": f"fp-{name}"}]}


def _postgres_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL fault")


def _admin(database_url: str) -> psycopg.Connection:
    return psycopg.connect(database_url, autocommit=True)


def test_an_exhausted_connection_pool_is_transient(tmp_path):
    """The pool's TimeoutError (no connection free in time) means: answer 503, retry."""
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}", poolclass=QueuePool, pool_size=1,
                           max_overflow=0, pool_timeout=0.1)
    held = engine.connect()
    try:
        with pytest.raises(SQLAlchemyError) as caught:
            engine.connect()
        assert is_transient(caught.value), type(caught.value)
    finally:
        held.close()
        engine.dispose()


def test_replicas_wait_for_a_slow_migration_instead_of_crash_looping(bot_env, database_url,
                                                                      tmp_path):
    """Another replica migrating (the migration lock held) longer than the lock timeout:
    the starting bot waits on the lock, then starts; it used to fail after lock_timeout."""
    _postgres_only(database_url)
    bot = BotProcess({**bot_env, "DATABASE_LOCK_TIMEOUT_SECONDS": "1"},
                     log_path=tmp_path / "bot.log", token=WEBHOOK_TOKEN)
    with _admin(database_url) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        started: list[BaseException | None] = []

        def start() -> None:
            try:
                bot.start()
                started.append(None)
            except BaseException as exc:  # noqa: BLE001 - reported below
                started.append(exc)

        starter = threading.Thread(target=start)
        starter.start()
        try:
            # The bot has waited on the lock for longer than its lock timeout (1s),
            # measured by the server.
            wait_for(lambda: holder.execute(
                "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.objid::bigint = %s AND NOT l.granted "
                "AND a.datname = current_database() "
                "AND now() - a.query_start > interval '3 seconds'",
                (MIGRATION_LOCK,)).fetchone(), timeout=30, what="the bot waiting on the lock")
            assert bot.process is not None and bot.process.poll() is None, bot.log()
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
            starter.join(timeout=90)
    try:
        assert started == [None], f"{started}\n{bot.log()}"
        assert bot.http.get("/readyz").status_code == 200
        assert bot.post("alertmanager", _alert("AfterMigration")).status_code == 202
    finally:
        bot.stop()


def _leader(admin: psycopg.Connection) -> list[int]:
    """Pids holding the timer leader lock in this database."""
    return [pid for (pid,) in admin.execute(
        "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.objid::bigint = %s AND l.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())",
        (LEADER_LOCK,)).fetchall()]


def test_a_leader_whose_lock_connection_dies_stops_scheduling_and_one_takes_over(
        bot_env, database_url, tmp_path):
    _postgres_only(database_url)
    env = {**bot_env, "TIMER_RECONCILE_SECONDS": "0.2"}
    bots = [BotProcess(env, log_path=tmp_path / f"bot{n}.log", token=WEBHOOK_TOKEN)
            for n in range(2)]
    try:
        for bot in bots:
            bot.start()
        with _admin(database_url) as admin:
            (first,) = wait_for(lambda: _leader(admin), timeout=30, what="a timer leader")
            name, state = admin.execute(
                "SELECT application_name, state FROM pg_stat_activity WHERE pid = %s",
                (first,)).fetchone()
            # Named, and never idle in a transaction between rounds (idle, or proving
            # it holds the lock this very moment).
            assert name == LEADER_APPLICATION_NAME and state in ("idle", "active"), state
            leading = [bot for bot in bots if "now runs the timers" in bot.log()]
            assert len(leading) == 1

            admin.execute("SELECT pg_terminate_backend(%s)", (first,))

            leading[0].until(lambda: "lost the timer leader lock" in leading[0].log(),
                             timeout=30, what="the leader noticing its lock is gone")
            (second,) = wait_for(lambda: _leader(admin), timeout=30, what="a new leader")
            assert second != first
            wait_for(lambda: sum(bot.log().count("now runs the timers") for bot in bots) == 2,
                     timeout=30, what="the new leader to run the timers")
        # Each process still serves.
        for n, bot in enumerate(bots):
            assert bot.post("alertmanager", _alert(f"AfterTakeover{n}")).status_code == 202
    finally:
        for bot in bots:
            bot.stop()


def test_a_database_that_goes_away_answers_503_with_retry_after_never_500(
        bot, database_url, pagerduty):
    """Its connections killed and new ones refused (the database only, not the shared
    server): every edge that needs the database answers 503 with Retry-After, the
    liveness probe stays 200, and once it is back the alert sent meanwhile pages once."""
    _postgres_only(database_url)
    assert bot.post("alertmanager", _alert("Before")).status_code == 202
    name = database_url.rsplit("/", 1)[1]
    with _admin(database_url.rsplit("/", 1)[0] + "/postgres") as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s", (name,))
            down = bot.post("alertmanager", _alert("WhileDown"))
            assert (down.status_code, down.headers.get("retry-after")) == (503, "5"), down.text
            for path in ("/metrics", "/readyz"):
                answer = bot.http.get(path)
                assert (answer.status_code, answer.headers.get("retry-after")) == (503, "5"), path
            assert bot.http.get("/healthz").status_code == 200
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    assert bot.post("alertmanager", _alert("WhileDown")).status_code == 202
    assert bot.http.get("/metrics").status_code == 200
    bot.until(bot.outbox_settled, timeout=30, what="the outbox to drain")
    for title in ("Before", "WhileDown"):
        ((key,),) = bot.rows("SELECT key FROM incident WHERE title LIKE :t", t=f"%{title}%")
        assert len([e for e in pagerduty.events_for(key)
                    if e["event"]["event_action"] == "trigger"]) == 1, title


def _pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(os.environ.get("TEST_PG_RESTART") != "1",
                    reason="restarts the shared PostgreSQL server: set TEST_PG_RESTART=1")
def test_postgresql_restarted_under_load_costs_503s_and_delivers_everything_once(
        bot, database_url, pagerduty, slack):
    _postgres_only(database_url)
    answers: dict[str, list[tuple[int, str | None]]] = {}
    transport_errors: list[str] = []
    restarted = threading.Event()

    def send() -> None:
        """New alert groups one after another, like Alertmanager: each retried on 5xx
        until accepted; until the restart is over, and 20 more groups after it."""
        after = 0
        pending: list[str] = []
        with httpx.Client(base_url=bot.url, timeout=30) as client:
            while pending or after < 20:
                if not pending:
                    pending.append(f"Restart{len(answers)}")
                    answers[pending[0]] = []
                    after += restarted.is_set()
                name = pending[0]
                try:
                    response = client.post(
                        "/webhooks/alertmanager", json=_alert(name),
                        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"})
                except httpx.TransportError as exc:
                    transport_errors.append(f"{name}: {exc!r}")
                    continue
                answers[name].append((response.status_code, response.headers.get("retry-after")))
                if response.status_code == 202:
                    pending.pop(0)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        wait_for(lambda: len(answers) >= 10, timeout=30, what="load before the restart")
        restart = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect",
                                  *PG_CLUSTER.split(), "restart"],
                                 capture_output=True, text=True, timeout=120)
        assert restart.returncode == 0, restart.stderr
    finally:
        restarted.set()
        if not _pg_ready():
            subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER.split(),
                            "start"], capture_output=True, timeout=120)
        wait_for(_pg_ready, timeout=60, what="PostgreSQL back up")
        sender.join(timeout=300)
    assert not sender.is_alive()

    got = [answer for replies in answers.values() for answer in replies]
    print(f"{len(answers)} groups, {got.count((503, '5'))} answered 503 first")
    assert (503, "5") in got  # the restart was hit
    assert [answer for answer in got if answer not in ((202, None), (503, "5"))] == []
    assert transport_errors == []
    bot.until(bot.outbox_settled, timeout=120, what="everything owed delivered")
    incidents = bot.rows("SELECT key, title FROM incident")
    assert len(incidents) == len(answers)  # one per group, none lost
    for incident in incidents:
        assert len([e for e in pagerduty.events_for(incident.key)
                    if e["event"]["event_action"] == "trigger"]) == 1, incident.title
    assert len(slack.top_level_messages()) == len(answers)
