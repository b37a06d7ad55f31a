"""L2 escalation on incidents, and receipts of applied PagerDuty webhooks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 13:40:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incident", schema=None) as batch_op:
        batch_op.add_column(sa.Column("escalated_team", sqlmodel.sql.sqltypes.AutoString(),
                                      nullable=True))
        batch_op.add_column(sa.Column("escalated_at", sqlmodel.sql.sqltypes.UTCDateTime(),
                                      nullable=True))
        batch_op.add_column(sa.Column("escalated_by", sqlmodel.sql.sqltypes.AutoString(),
                                      nullable=True))
        batch_op.add_column(sa.Column("escalation_paged", sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    op.create_table(
        "webhookreceipt",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("received_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("webhookreceipt")
    with op.batch_alter_table("incident", schema=None) as batch_op:
        batch_op.drop_column("escalation_paged")
        batch_op.drop_column("escalated_by")
        batch_op.drop_column("escalated_at")
        batch_op.drop_column("escalated_team")
