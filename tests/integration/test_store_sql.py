"""What the store does to spend fewer round trips on PostgreSQL, checked on real
databases: list parameters with one statement text whatever their length, pooled
connections the server ended replaced without a failed statement, reads and single
writes in autocommit, and statements run together (one pipeline). Statements are
captured with SQLAlchemy's own event hooks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import bindparam, event, insert, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from bot.clock import utcnow
from bot.db import Database
from bot.models import AlertOccurrence, Delivery, Incident
from bot.store.sql import one_of, read_together, write_together


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


def _incident(session, now, n: int) -> int:  # type: ignore[no-untyped-def]
    incident = Incident(key=f"k{n}", group_key=f"g{n}", group_hash=f"h{n}",
                        open_group_hash=f"h{n}", title=f"t{n}", state="triggered", tier="L1",
                        route="default", source="generic", labels={"n": str(n)},
                        triggered_at=now, last_alert_at=now)
    session.add(incident)
    session.flush()
    return incident.id  # type: ignore[return-value]


def test_reads_together_give_what_each_read_alone_gives(database_url: str) -> None:
    """Rows of several reads at once (one pipeline on PostgreSQL) equal those of each
    read run alone: columns by name, types converted (aware datetimes, JSON)."""
    db = database(database_url)
    now = utcnow()
    with db.write() as session:
        ids = [_incident(session, now, n) for n in range(3)]
    table = Incident.__table__  # type: ignore[attr-defined]
    by_hash = select(*table.c).where(one_of(table.c.open_group_hash, "hashes"))
    by_id = select(table.c.id, table.c.labels, table.c.triggered_at).where(
        one_of(table.c.id, "ids")).order_by(table.c.id)
    reads = [(by_hash, {"hashes": ["h0", "h2"]}), (by_id, {"ids": ids[1:]}),
             (by_id, {"ids": []})]
    with db.write() as session:
        together = read_together(session, reads)
    with db.read() as session:
        alone = [list(session.connection().execute(s, p).all()) for s, p in reads]
    assert [[tuple(row) for row in rows] for rows in together] == \
        [[tuple(row) for row in rows] for rows in alone]
    assert sorted(row.group_hash for row in together[0]) == ["h0", "h2"]
    assert [(row.labels, row.triggered_at) for row in together[1]] == \
        [({"n": "1"}, now), ({"n": "2"}, now)]
    db.dispose()


def test_writes_together_are_written_and_a_refused_row_fails_as_sqlalchemy_says(
        database_url: str) -> None:
    """A unique index refusing a row written together with others is the IntegrityError
    intake retries on (two replicas opening one group), and nothing of it stays."""
    db = database(database_url)
    now = utcnow()
    occurrence = AlertOccurrence.__table__  # type: ignore[attr-defined]
    insert_occurrence = insert(occurrence)
    last_alert = update(Incident.__table__).where(  # type: ignore[attr-defined]
        Incident.__table__.c.id == bindparam("incident_id")).values(  # type: ignore[attr-defined]
        last_alert_at=bindparam("at"))

    def row(incident_id: int, fingerprint: str) -> dict:
        return {"incident_id": incident_id, "fingerprint": fingerprint, "status": "firing",
                "source": "generic", "labels": {}, "annotations": {"a": fingerprint},
                "starts_at": now, "ends_at": None, "first_seen_at": now,
                "last_seen_at": now, "repeats": 0}

    with db.write() as session:
        incident_id = _incident(session, now, 0)
    later = now + timedelta(minutes=1)
    with db.write() as session:
        write_together(session, [(last_alert, [{"incident_id": incident_id, "at": later}]),
                                 (insert_occurrence, [row(incident_id, "a"),
                                                      row(incident_id, "b")])])
    with pytest.raises(IntegrityError), db.write() as session:
        write_together(session, [(last_alert, [{"incident_id": incident_id, "at": now}]),
                                 (insert_occurrence, [row(incident_id, "c"),
                                                      row(incident_id, "a")])])
    with db.read() as session:
        assert session.exec(select(Incident.last_alert_at)).all() == [later]
        assert sorted(session.exec(select(AlertOccurrence.fingerprint)).all()) == ["a", "b"]
        assert session.exec(select(AlertOccurrence.annotations).where(
            AlertOccurrence.fingerprint == "b")).all() == [{"a": "b"}]
    db.dispose()
