"""Undelivered pages are announced; pending deliveries get an index of their own

`delivery.alerted_at` records the last "PAGE NOT DELIVERED" message about a page,
so replicas (and a restarted process) repeat it every 15 minutes, not once each.
`ix_delivery_pending` covers only pending rows, by target and age: /metrics reads
the count and the oldest of each target from it without walking the history.

Revision ID: 0007
Revises: 0005
Create Date: 2026-11-30 10:30:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery") as batch_op:
        batch_op.add_column(sa.Column("alerted_at", sqlmodel.sql.sqltypes.UTCDateTime(),
                                      nullable=True))
    op.create_index("ix_delivery_pending", "delivery", ["target", "created_at"],
                    postgresql_where=sa.text("state = 'pending'"),
                    sqlite_where=sa.text("state = 'pending'"))


def downgrade() -> None:
    op.drop_index("ix_delivery_pending", table_name="delivery")
    with op.batch_alter_table("delivery") as batch_op:
        batch_op.drop_column("alerted_at")
