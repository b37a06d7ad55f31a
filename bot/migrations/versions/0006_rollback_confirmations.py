"""Rollback confirmations kept on the server, and where a requested run is answered

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 10:40:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
_TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "rollbackconfirmation",
        sa.Column("id", _TEXT(length=64), nullable=False),
        sa.Column("model", _TEXT(), nullable=False),
        sa.Column("alias", _TEXT(), nullable=False),
        sa.Column("from_version", _TEXT(), nullable=False),
        sa.Column("to_version", _TEXT(), nullable=False),
        sa.Column("runbook", _TEXT(), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("environment", _TEXT(), nullable=False),
        sa.Column("previewed_by", _TEXT(), nullable=False),
        sa.Column("created_at", _TIME(), nullable=False),
        sa.Column("expires_at", _TIME(), nullable=False),
        sa.Column("used_at", _TIME(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rollbackconfirmation_expires_at", "rollbackconfirmation", ["expires_at"])
    with op.batch_alter_table("runbookrun") as batch_op:
        batch_op.add_column(sa.Column("answer_url", _TEXT(), nullable=True))
        batch_op.add_column(sa.Column("answer_channel", _TEXT(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runbookrun") as batch_op:
        batch_op.drop_column("answer_channel")
        batch_op.drop_column("answer_url")
    op.drop_index("ix_rollbackconfirmation_expires_at", table_name="rollbackconfirmation")
    op.drop_table("rollbackconfirmation")
