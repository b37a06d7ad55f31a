"""Index the outbox as one queue per state and target, in id order

A claim reads each target's pending deliveries in id order and stops at its limit;
the old (state, next_attempt_at) index made it sort every due delivery instead,
which in a backlog of thousands of Slack edits cost more than the claim itself.
next_attempt_at rides along so that rows backing off are skipped in the index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 16:20:00
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("delivery") as batch_op:
        batch_op.create_index("ix_delivery_queue", ["state", "target", "id", "next_attempt_at"])
        batch_op.drop_index("ix_delivery_due")


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch_op:
        batch_op.create_index("ix_delivery_due", ["state", "next_attempt_at"])
        batch_op.drop_index("ix_delivery_queue")
