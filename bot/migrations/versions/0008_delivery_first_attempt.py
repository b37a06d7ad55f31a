"""A delivery remembers when it was first attempted

`delivery.first_attempt_at` is set when a row is first leased for sending. A
Slack post whose row already has one may have reached Slack without the answer
being recorded (a killed process, an expired lease), so the outbox looks for the
message, by its metadata, in the channel's history since then before posting again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 11:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery") as batch_op:
        batch_op.add_column(sa.Column("first_attempt_at", sqlmodel.sql.sqltypes.UTCDateTime(),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch_op:
        batch_op.drop_column("first_attempt_at")
