"""What the store does to spend fewer round trips on PostgreSQL, checked on real
databases: list parameters with one statement text whatever their length, pooled
connections the server ended replaced without a failed statement, and reads in
autocommit. Statements are captured with SQLAlchemy's own event hooks."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text, update
from sqlmodel import select

from bot.clock import utcnow
from bot.db import Database
from bot.models import Delivery


def database(url: str) -> Database:
    db = Database(url)
    db.upgrade()
    return db


def test_a_pooled_connection_the_server_ended_is_replaced_before_it_is_used(
        database_url: str) -> None:
    """Without SQLAlchemy's pre-ping (a round trip per checkout): the ended connection
    is noticed from its socket."""
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL connection")
    db = database(database_url)
    query = text("SELECT pg_backend_pid()")
    with db.write() as session:
        first = session.exec(query).scalar()  # type: ignore[call-overload]
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        for _ in range(100):  # until the backend is gone
            if not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                 (first,)).fetchone():
                break
    with db.write() as session:  # would raise if handed the ended connection
        second = session.exec(query).scalar()  # type: ignore[call-overload]
    assert second != first
    db.dispose()


def test_a_single_write_commits_and_on_postgresql_reads_and_it_run_in_autocommit(
        database_url: str) -> None:
    """No BEGIN and COMMIT/ROLLBACK around a read or a one-statement write (under READ
    COMMITTED each statement sees the newest commits either way); `write()` keeps its
    transaction."""
    db = database(database_url)
    now = utcnow()
    with db.write() as session:
        session.add(Delivery(incident_id=None, target="slack", action="post", payload={},
                             created_at=now, next_attempt_at=now))
    with db.write_one() as session:
        session.exec(update(Delivery).values(attempts=7))  # type: ignore[call-overload]
    with db.read() as session:
        assert session.exec(select(Delivery.attempts)).all() == [7]
    if not db.is_sqlite:
        def autocommit(session) -> bool:  # type: ignore[no-untyped-def]
            return session.connection().connection.driver_connection.autocommit

        with db.read() as session:
            assert autocommit(session)
        with db.write_one() as session:
            assert autocommit(session)
        with db.write() as session:
            assert not autocommit(session)
    db.dispose()
