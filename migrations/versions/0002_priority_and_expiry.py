"""Lanes and lifetimes: a priority and an expiry per message, and the claim index by priority.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Existing rows become normal priority with no expiry. The claim's index on due pending rows
leads with the priority, so every claim reads each lane's due rows in due order. On a large
PostgreSQL table, create the new index CONCURRENTLY by hand before upgrading if writes must
not wait for it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("outbox_messages") as table:
        table.add_column(
            sa.Column("priority", sa.SmallInteger(), server_default=sa.text("1"), nullable=False)
        )
        table.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        table.create_check_constraint(op.f("ck_outbox_messages_priority"), "priority IN (0, 1, 2)")
    op.drop_index("ix_outbox_messages_due", table_name="outbox_messages")
    op.create_index(
        "ix_outbox_messages_due",
        "outbox_messages",
        ["priority", "next_attempt_at", "id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_messages_due", table_name="outbox_messages")
    op.create_index(
        "ix_outbox_messages_due",
        "outbox_messages",
        ["next_attempt_at", "id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    with op.batch_alter_table("outbox_messages") as table:
        table.drop_constraint(op.f("ck_outbox_messages_priority"), type_="check")
        table.drop_column("expires_at")
        table.drop_column("priority")
