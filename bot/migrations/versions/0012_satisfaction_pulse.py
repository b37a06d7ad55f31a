"""Satisfaction pulses and their answers (issue 13 item 5)

One row per pulse posted (unique per cron occurrence) and one answer per person and
pulse (unique pair: a second click updates it).

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-06 22:30:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
_TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "pulse",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", _TEXT(length=64), nullable=False),
        sa.Column("channel", _TEXT(), nullable=False),
        sa.Column("opened_at", _TIME(), nullable=False),
        sa.Column("closed_at", _TIME(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_pulse_opened_at", "pulse", ["opened_at"])
    op.create_table(
        "pulseanswer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pulse_id", sa.Integer(), nullable=False),
        sa.Column("user_id", _TEXT(length=32), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("comment", _TEXT(length=1000), nullable=False),
        sa.Column("answered_at", _TIME(), nullable=False),
        sa.ForeignKeyConstraint(["pulse_id"], ["pulse.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("pulse_id", "user_id"),
    )


def downgrade() -> None:
    op.drop_table("pulseanswer")
    op.drop_index("ix_pulse_opened_at", table_name="pulse")
    op.drop_table("pulse")
