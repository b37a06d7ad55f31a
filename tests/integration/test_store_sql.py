"""What the store does to spend fewer round trips on PostgreSQL, checked on real
databases: list parameters with one statement text whatever their length, pooled
connections the server ended replaced without a failed statement, and reads in
autocommit. Statements are captured with SQLAlchemy's own event hooks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from sqlalchemy import event, text, update
from sqlmodel import select

from bot.clock import utcnow
from bot.db import Database
from bot.models import Delivery
from bot.store.sql import one_of


def database(url: str) -> Database:
    db = Database(url)
    db.upgrade()
    return db


@contextmanager
def captured(db: Database) -> Iterator[list[str]]:
    """The SQL text of every statement the database's engines send meanwhile."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(statement)

    engines = [db.writer, db.reader] if db.is_sqlite else [db.writer]  # one pool on PostgreSQL
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


def test_a_list_parameter_selects_the_same_rows_and_on_postgresql_keeps_one_text(
        database_url: str) -> None:
    db = database(database_url)
    now = utcnow()
    with db.write() as session:
        session.add_all(Delivery(incident_id=None, target="slack", action="post", payload={},
                                 created_at=now, next_attempt_at=now) for _ in range(9))
    with db.read() as session:
        ids = sorted(session.exec(select(Delivery.id)).all())
    statement = select(Delivery.id).where(one_of(Delivery.id, "ids")).order_by(Delivery.id)
    sizes = (1, 3, 7)
    with captured(db) as seen, db.read() as session:
        found = [list(session.exec(statement, params={"ids": ids[:n]}).all())  # type: ignore[call-overload]
                 for n in sizes]
    assert found == [ids[:n] for n in sizes]
    texts = [sql for sql in seen if "FROM delivery" in sql]
    assert len(texts) == len(sizes)
    if db.is_sqlite:  # no arrays: an IN list as long as the values
        assert [sql.count("?") for sql in texts] == list(sizes)
    else:
        assert len(set(texts)) == 1 and "ANY" in texts[0]
    db.dispose()


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
