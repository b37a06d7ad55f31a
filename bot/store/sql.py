"""SQL the store's modules share, for what SQLite and PostgreSQL do differently."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy import Boolean, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, any_
from sqlalchemy.sql.visitors import InternalTraversal
from sqlmodel import Session


class OneOf(ColumnElement[bool]):
    """`column` is one of the values of the list bound as `name`.

    On PostgreSQL `column = ANY(:name)`, one array parameter: the statement's text is
    the same whatever the list's length, so psycopg converts it once and, after a few
    uses, has the server run it prepared. Elsewhere an expanding `IN (…)` (SQLite has
    no arrays), whose text changes with the length."""

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a comparison: no `= 1` after it where booleans are ints
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement),
                           ("name", InternalTraversal.dp_string)]

    def __init__(self, column: Any, name: str) -> None:
        self.column = column.__clause_element__() if hasattr(column, "__clause_element__") \
            else column
        self.name = name


def one_of(column: Any, name: str) -> OneOf:
    return OneOf(column, name)


@compiles(OneOf)
def _in_list(element: OneOf, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.column.in_(bindparam(element.name, expanding=True)), **kw)


@compiles(OneOf, "postgresql")
def _any(element: OneOf, compiler: Any, **kw: Any) -> str:
    array = bindparam(element.name, type_=ARRAY(element.column.type))
    return compiler.process(element.column == any_(array), **kw)


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A read compiled once for a dialect, to run on the driver's cursor: its SQL, how
    its parameters and result columns are converted (as SQLAlchemy would), and a row
    type whose attributes are the column names."""

    sql: str
    compiled: Any
    bind_processors: Mapping[str, Callable[[Any], Any]]
    result_processors: tuple[Callable[[Any], Any] | None, ...]
    row: Callable[..., Any]

    def parameters(self, params: Mapping[str, Any]) -> dict[str, Any]:
        values = self.compiled.construct_params(dict(params))
        return {name: self.bind_processors[name](value) if name in self.bind_processors
                else value for name, value in values.items()}

    def rows(self, fetched: Sequence[Sequence[Any]]) -> list[Any]:
        if not any(self.result_processors):
            return [self.row(*values) for values in fetched]
        return [self.row(*(convert(value) if convert else value
                           for convert, value in zip(self.result_processors, values, strict=True)))
                for values in fetched]


@cache
def _compiled(statement: Any, dialect: Any, keys: tuple[str, ...] | None = None) -> _Compiled:
    """`keys`: the columns an INSERT's rows give (the statement names no values)."""
    compiled = statement.compile(dialect=dialect, column_keys=keys)
    columns = compiled._result_columns
    return _Compiled(
        sql=compiled.string, compiled=compiled,
        bind_processors=compiled._bind_processors,
        result_processors=tuple(column.type._cached_result_processor(dialect, None)
                                for column in columns),
        row=namedtuple("Row", [column.keyname for column in columns],  # type: ignore[misc]
                       rename=True))


def _pipelined(dialect: Any, driver: Any, statements: int) -> bool:
    """Worth a pipeline: two statements or more, or one that starts a transaction (its
    BEGIN then goes with it)."""
    if dialect.name != "postgresql" or not statements:
        return False
    return statements > 1 or (not driver.autocommit
                              and driver.info.transaction_status == TransactionStatus.IDLE)


def read_together(session: Session,
                  reads: Sequence[tuple[Any, Mapping[str, Any]]]) -> list[list[Any]]:
    """Run reads that do not depend on one another (Core selects of columns, built once):
    rows for each, with attribute access by column name.

    On PostgreSQL they are queued in one psycopg pipeline, so they cost one round trip
    together (with the BEGIN of a transaction that starts with them) instead of one
    each (and the BEGIN one more); elsewhere they run one after another. Database errors come out as SQLAlchemy
    errors, as from any statement."""
    connection = session.connection()
    dialect = connection.dialect
    driver = connection.connection.driver_connection
    if not _pipelined(dialect, driver, len(reads)):
        return [list(connection.execute(statement, dict(params)).all())
                for statement, params in reads]
    prepared = [(_compiled(statement, dialect), params) for statement, params in reads]
    cursors = []
    try:
        with driver.pipeline():
            for compiled, params in prepared:
                cursor = driver.cursor()
                cursor.execute(compiled.sql, compiled.parameters(params))
                cursors.append(cursor)
        return [compiled.rows(cursor.fetchall())
                for (compiled, _), cursor in zip(prepared, cursors, strict=True)]
    except psycopg.Error as exc:
        raise _translated(exc, prepared[0][0].sql, connection, driver) from exc
    finally:
        for cursor in cursors:
            cursor.close()


def write_together(session: Session, writes: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]],
                   ) -> None:
    """Run writes whose outcome nothing waits for (Core statements built once, each
    executed for its rows; an INSERT's rows all give the same columns).

    On PostgreSQL they are queued in one psycopg pipeline: one round trip for all of
    them (and the BEGIN of a transaction that starts with them) instead of one each; a
    failure (a unique index refusing a row, say) comes out
    as the SQLAlchemy error it would be. Elsewhere one after another."""
    writes = [(statement, rows) for statement, rows in writes if rows]
    connection = session.connection()
    dialect = connection.dialect
    driver = connection.connection.driver_connection
    if not _pipelined(dialect, driver, len(writes)):
        for statement, rows in writes:
            connection.execute(statement, list(rows))
        return
    sql, cursors = "", []
    try:
        with driver.pipeline():
            for statement, rows in writes:
                compiled = _compiled(statement, dialect,
                                     tuple(rows[0]) if statement.is_insert else None)
                sql = compiled.sql
                cursors.append(driver.cursor())
                cursors[-1].executemany(sql, [compiled.parameters(row) for row in rows])
    except psycopg.Error as exc:
        raise _translated(exc, sql, connection, driver) from exc
    finally:
        for cursor in cursors:
            cursor.close()


def _translated(exc: psycopg.Error, sql: str, connection: Any, driver: Any) -> DBAPIError:
    """The SQLAlchemy error for a driver error, the connection invalidated if it was lost
    (as SQLAlchemy does for the statements it runs itself)."""
    invalidated = connection.dialect.is_disconnect(exc, driver, None)
    if invalidated:
        connection.invalidate(exc)
    return DBAPIError.instance(sql, None, exc, psycopg.Error, connection_invalidated=invalidated,
                               dialect=connection.dialect)
