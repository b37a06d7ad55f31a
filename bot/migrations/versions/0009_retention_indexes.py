"""Indexes for a big record: retention prunes by age, intake finds reopen candidates

Each prune batch is an index range scan over rows older than the cutoff, so a
prune costs what it deletes, not the size of the tables. The occurrence index is
on `first_seen_at`, which a repeat never updates (PostgreSQL keeps those updates
heap-only). `ix_incident_reopen` serves intake's reopen lookup (group, resolved,
recently): with only the state index, SQLite walked every resolved incident for
each batch, which halved intake with 100,000 incidents stored (bench/retention.py).

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-30 11:00:00
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_incident_reopen", "incident", ("group_hash", "state", "resolved_at")),
    ("ix_alertoccurrence_first_seen_at", "alertoccurrence", ("first_seen_at",)),
    ("ix_delivery_created_at", "delivery", ("created_at",)),
    ("ix_webhookreceipt_received_at", "webhookreceipt", ("received_at",)),
    ("ix_stepresult_started_at", "stepresult", ("started_at",)),
)


def upgrade() -> None:
    for name, table, columns in _INDEXES:
        op.create_index(name, table, list(columns))


def downgrade() -> None:
    for name, table, _columns in _INDEXES:
        op.drop_index(name, table_name=table)
