"""Drift counters: consecutive clean batches of each detector's model and feature in drift

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-06 22:30:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
_TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "driftcounter",
        sa.Column("key", _TEXT(length=64), nullable=False),
        sa.Column("detector", _TEXT(), nullable=False),
        sa.Column("model", _TEXT(), nullable=False),
        sa.Column("feature", _TEXT(), nullable=False),
        sa.Column("clean_batches", sa.Integer(), nullable=False),
        sa.Column("drifting_since", _TIME(), nullable=False),
        sa.Column("updated_at", _TIME(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("driftcounter")
