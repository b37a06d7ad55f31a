"""Engines, sessions and migrations for SQLite and PostgreSQL.

Writes go through `Database.write()`. On SQLite the write engine holds a single
connection, so writers in this process queue on the pool instead of spinning in
SQLite's busy handler, and each write transaction starts with BEGIN IMMEDIATE so
another process (the CLI, say) cannot deadlock it. WAL with synchronous=FULL
makes a commit durable before the webhook answers 2xx.

On PostgreSQL each statement is a round trip to the server, and BEGIN and COMMIT
(or ROLLBACK) are two more: reads (`read()`) and single-statement writes
(`write_one()`) run in autocommit, which under READ COMMITTED sees exactly what a
transaction's statement would (each statement its own snapshot) without them.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import NullPool
from sqlmodel import Session

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@cache
def known_revisions() -> tuple[str, frozenset[str]]:
    """This code's head revision, and every revision it knows."""
    script = ScriptDirectory.from_config(_alembic_config())
    return script.get_current_head() or "", frozenset(r.revision for r in script.walk_revisions())


def schema_problem(stamped: str | None, head: str, known: frozenset[str]) -> str | None:
    """Why a database stamped `stamped` cannot serve this code, or None if it can.

    A revision this code does not know was written by newer code (a rolling upgrade
    in progress): its migrations only add, so this code still runs on it."""
    if stamped is None:
        return "the database has no schema yet"
    if stamped != head and stamped in known:
        return f"the schema is at revision {stamped}, older than {head}"
    return None


def redacted(url: str) -> str:
    """The URL with any password masked, fit for logs and start-up messages."""
    return make_url(url).render_as_string(hide_password=True)


def _normalized(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


def _sqlite_engine(url: str, *, writer: bool, lock_timeout: float, durable: bool = True) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": lock_timeout},
        # Few readers: WAL gives concurrent readers a handful of read marks, and
        # beyond them they spin in the busy handler while writes keep committing.
        pool_size=1 if writer else 4,
        max_overflow=0,
        pool_timeout=30,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below rule
        cursor = dbapi_connection.cursor()
        if writer:  # WAL is a property of the file; the writer sets it once per connection
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(lock_timeout * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


def _ended_by_server(dbapi_connection, _record, _proxy) -> None:  # type: ignore[no-untyped-def]
    """A pooled PostgreSQL connection the server ended (a restart, a terminated backend,
    an idle timeout) is replaced at checkout. SQLAlchemy's pre-ping would ask the
    server, a round trip per transaction; an idle connection's socket has nothing to
    read unless the server closed it (or said something unasked), so a readable socket
    is the sign, seen without a round trip."""
    if dbapi_connection.closed or select.select([dbapi_connection.fileno()], [], [], 0)[0]:
        raise DisconnectionError("the server ended this pooled connection")


class Database:
    """The bot's database: a writer and a reader engine (the same one on PostgreSQL)."""

    def __init__(self, url: str, *, lock_timeout: float = 5.0, pool_size: int = 20) -> None:
        """`lock_timeout`: how long a statement may wait for a lock before it fails
        (and the webhook answers 503) instead of hanging the sender. `pool_size`: the
        PostgreSQL connections this process may hold (DATABASE_POOL_SIZE)."""
        self.url = _normalized(url)
        self.lock_timeout = lock_timeout
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            self.writer = _sqlite_engine(self.url, writer=True, lock_timeout=lock_timeout)
            self.reader = _sqlite_engine(self.url, writer=False, lock_timeout=lock_timeout)
        else:
            timeout_ms = int(lock_timeout * 1000)
            self.writer = create_engine(
                self.url, pool_size=pool_size, max_overflow=0,
                connect_args={"connect_timeout": max(1, int(lock_timeout)),
                              "options": f"-c lock_timeout={timeout_ms}"},
            )
            event.listen(self.writer, "checkout", _ended_by_server)
            # The same pool; a connection is in autocommit while checked out from here.
            self.reader = self.writer.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose transaction commits on exit and rolls back on error."""
        with Session(self.writer, expire_on_commit=False) as session:
            with session.begin():
                yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads (on PostgreSQL in autocommit: no BEGIN or ROLLBACK)."""
        with Session(self.reader, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write_one(self) -> Iterator[Session]:
        """A session for ONE write statement, which is then its own transaction: on
        PostgreSQL in autocommit (one round trip instead of three), on SQLite `write()`."""
        if self.is_sqlite:
            with self.write() as session:
                yield session
            return
        with Session(self.reader, expire_on_commit=False) as session:
            yield session

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (safe to run from several replicas).
        A schema newer than this code (another replica's upgrade) is left as it is."""
        config = _alembic_config()
        # Alembic's INFO lines ("Context impl SQLiteImpl", "Will assume ...") say nothing an
        # operator needs at each start; LOG_LEVEL=DEBUG (the root logger's level) shows them.
        logging.getLogger("alembic").setLevel(
            logging.NOTSET if logging.getLogger().isEnabledFor(logging.DEBUG) else logging.WARNING)
        with self.writer.connect() as connection:
            stamped = MigrationContext.configure(connection).get_current_revision()
            connection.rollback()
            if stamped is not None and stamped not in known_revisions()[1]:
                log.warning("the database schema (revision %s) is newer than this code knows; "
                            "not migrating", stamped)
                return
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def readiness_problem(self) -> str | None:
        """None when the bot can serve: the database answers and its schema is one this
        code runs on; otherwise what is wrong, for /readyz."""
        try:
            stamped = self.schema_revision()
        except SQLAlchemyError as exc:
            log.warning("readiness: the database does not answer: %s", type(exc).__name__)
            return "database unavailable"
        head, known = known_revisions()
        return schema_problem(stamped, head, known)

    def schema_revision(self) -> str | None:
        """The revision the database is stamped with; raises SQLAlchemyError if unreachable."""
        with self.reader.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def lock_engine(self, application_name: str) -> Engine:
        """PostgreSQL only: an engine for one long-lived connection that holds a session
        advisory lock. Autocommit, so it never sits idle in a transaction (which would
        hold back vacuum and count against idle_in_transaction_session_timeout); TCP
        keepalives and a user timeout, so a peer gone without a FIN (a restarted server,
        a dropped NAT entry) is noticed in about half a minute instead of hours; and
        `application_name`, so operators (and tests) can find it in pg_stat_activity."""
        return create_engine(
            self.url, poolclass=NullPool, isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": max(1, int(self.lock_timeout)),
                          "application_name": application_name,
                          "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                          "keepalives_count": 3, "tcp_user_timeout": 30_000,
                          "options": f"-c statement_timeout={int(self.lock_timeout * 1000)}"},
        )

    def jobstore_engine(self) -> Engine:
        """An engine for APScheduler's job store. On SQLite a connection of its own, so
        the scheduler (which runs on the event loop) never queues behind intake for the
        writer connection; its commits skip the fsync (synchronous=NORMAL) and so hold
        the database's write lock only briefly: the jobs are rebuilt from the incidents
        at start, so a crash that loses the newest of them loses nothing. On PostgreSQL
        the shared pool."""
        if self.is_sqlite:
            return _sqlite_engine(self.url, writer=True, lock_timeout=self.lock_timeout,
                                  durable=False)
        return self.writer

    def dispose(self) -> None:
        self.writer.dispose()
        if self.is_sqlite:
            self.reader.dispose()


def is_transient(exc: BaseException) -> bool:
    """Database errors worth a retry by the caller (busy, locked, connection lost, or
    no pooled connection free within the pool's timeout: DATABASE_POOL_SIZE)."""
    if isinstance(exc, OperationalError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class DatabaseUnavailable(Exception):
    """A transient database failure (see `is_transient`): the caller answers "retry
    later" (HTTP 503). The message names the driver's error class, never its text."""


@contextmanager
def unavailable_when_transient() -> Iterator[None]:
    """Turn a transient database error into DatabaseUnavailable, so that edges can
    answer 503 without knowing the database library; other errors pass unchanged."""
    try:
        yield
    except SQLAlchemyError as exc:
        if not is_transient(exc):
            raise
        raise DatabaseUnavailable(type(exc).__name__) from exc
