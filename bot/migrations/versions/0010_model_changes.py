"""Model changes: registry alias moves learnt from MLflow webhooks and polls

`modelchange` holds each move once (unique on model, alias, to_version, moved_at);
`modelalias` is the bot's record of what each alias serves, moved compare-and-set
so that a webhook and a poll (or two replicas) record one move once.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 22:30:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
_TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "modelchange",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", _TEXT(), nullable=False),
        sa.Column("alias", _TEXT(), nullable=False),
        sa.Column("from_version", _TEXT(), nullable=True),
        sa.Column("to_version", _TEXT(), nullable=True),
        sa.Column("moved_at", _TIME(), nullable=False),
        sa.Column("author", _TEXT(), nullable=True),
        sa.Column("source", _TEXT(length=16), nullable=False),
        sa.Column("recorded_at", _TIME(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model", "alias", "to_version", "moved_at",
                            name="uq_modelchange_move"),
    )
    op.create_index("ix_modelchange_model_moved_at", "modelchange", ["model", "moved_at"])
    op.create_index("ix_modelchange_moved_at", "modelchange", ["moved_at"])
    op.create_table(
        "modelalias",
        sa.Column("model", _TEXT(), nullable=False),
        sa.Column("alias", _TEXT(), nullable=False),
        sa.Column("version", _TEXT(), nullable=True),
        sa.Column("observed_at", _TIME(), nullable=False),
        sa.PrimaryKeyConstraint("model", "alias"),
    )


def downgrade() -> None:
    op.drop_table("modelalias")
    op.drop_index("ix_modelchange_moved_at", table_name="modelchange")
    op.drop_index("ix_modelchange_model_moved_at", table_name="modelchange")
    op.drop_table("modelchange")
