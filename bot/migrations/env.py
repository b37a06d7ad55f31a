"""Alembic environment: migrations run on the connection `Database.upgrade` passes in."""

from alembic import context
from sqlalchemy import text
from sqlmodel import SQLModel

import bot.models  # noqa: F401  (registers the tables on SQLModel.metadata)

# Replicas starting together must not migrate at once; PostgreSQL serializes them.
# The lock is waited for however long another replica's migration takes (lock_timeout
# off while taking it): failing after DATABASE_LOCK_TIMEOUT_SECONDS would crash-loop
# every replica started with a slow migration.
_MIGRATION_LOCK = 7305_0001

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
if connection.dialect.name == "postgresql":
    connection.execute(text("SET lock_timeout = 0"))
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
    connection.execute(text("RESET lock_timeout"))  # the connection's own, for the DDL
try:
    with context.begin_transaction():
        context.run_migrations()
finally:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK})
        connection.commit()
