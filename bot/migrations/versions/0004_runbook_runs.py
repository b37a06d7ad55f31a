"""Runbook runs, their step results, and the per-model rollback lock

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 13:50:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
_TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "runbookrun",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("runbook", _TEXT(), nullable=False),
        sa.Column("purpose", _TEXT(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", _TEXT(length=16), nullable=False),
        sa.Column("requested_by", _TEXT(), nullable=False),
        sa.Column("created_at", _TIME(), nullable=False),
        sa.Column("started_at", _TIME(), nullable=True),
        sa.Column("finished_at", _TIME(), nullable=True),
        sa.Column("lease_until", _TIME(), nullable=True),
        sa.Column("slack_ts", _TEXT(), nullable=True),
        sa.ForeignKeyConstraint(["incident_id"], ["incident.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_runbookrun_incident_id", "runbookrun", ["incident_id"])
    op.create_table(
        "stepresult",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", _TEXT(), nullable=False),
        sa.Column("kind", _TEXT(length=16), nullable=False),
        sa.Column("status", _TEXT(length=16), nullable=False),
        sa.Column("started_at", _TIME(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False),
        sa.Column("output", _TEXT(), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runbookrun.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "position"),
    )
    op.create_table(
        "rollbacklock",
        sa.Column("model", _TEXT(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("taken_by", _TEXT(), nullable=False),
        sa.Column("taken_at", _TIME(), nullable=False),
        sa.PrimaryKeyConstraint("model"),
    )


def downgrade() -> None:
    op.drop_table("rollbacklock")
    op.drop_table("stepresult")
    op.drop_index("ix_runbookrun_incident_id", table_name="runbookrun")
    op.drop_table("runbookrun")
