"""Index the outbox by state, target and due time: each target's due deliveries are claimed on their own

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
    op.create_index("ix_delivery_queue", "delivery", ["state", "target", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_delivery_queue", table_name="delivery")
