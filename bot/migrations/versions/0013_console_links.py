"""One-time sign-in links to the web console (only their tokens' hashes)

Revision ID: 0013
Revises: 0009
Create Date: 2026-12-06 22:20:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_TEXT = sqlmodel.sql.sqltypes.AutoString
_TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "consolelink",
        sa.Column("token_hash", _TEXT(length=64), nullable=False),
        sa.Column("user_id", _TEXT(length=64), nullable=False),
        sa.Column("created_by", _TEXT(), nullable=False),
        sa.Column("created_at", _TIME(), nullable=False),
        sa.Column("expires_at", _TIME(), nullable=False),
        sa.Column("used_at", _TIME(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_consolelink_expires_at", "consolelink", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_consolelink_expires_at", table_name="consolelink")
    op.drop_table("consolelink")
