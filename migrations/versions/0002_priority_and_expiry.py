"""Lanes and lifetimes: a priority and an expiry per message, and the claim index by priority.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Existing rows become normal priority with no expiry. The claim's index on due pending rows
leads with the priority, so every claim reads each lane's due rows in due order.

PostgreSQL, beside a running application (worker/ops/online_ddl.py): the two columns are a
catalogue change (a constant default rewrites nothing); the check constraint is added NOT VALID
and validated apart; the new claim index is built concurrently under a name of its own, then the
old one is dropped concurrently and the new one takes its name. Each step is skipped when done.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.ops import online_ddl

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")
DUE = "ix_outbox_messages_due"
# The new claim index's name until the old one is gone.
DUE_BY_PRIORITY = "ix_outbox_messages_due_by_priority"
DUE_COLUMNS = "priority, next_attempt_at, id"


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with online_ddl.steps():
            _upgrade_online()
        return
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


def _upgrade_online() -> None:
    online_ddl.short_transaction(
        "ALTER TABLE outbox_messages ADD COLUMN IF NOT EXISTS priority SMALLINT DEFAULT 1 NOT NULL",
        "ALTER TABLE outbox_messages ADD COLUMN IF NOT EXISTS expires_at TIMESTAMP WITH TIME ZONE",
    )
    online_ddl.add_check_constraint(
        "outbox_messages", "ck_outbox_messages_priority", "priority IN (0, 1, 2)"
    )
    if not online_ddl.offline() and _due_leads_with_priority():
        return
    online_ddl.create_index(
        DUE_BY_PRIORITY, "outbox_messages", DUE_COLUMNS, where="status = 'pending'"
    )
    online_ddl.drop_index(DUE)
    online_ddl.short_transaction(f"ALTER INDEX IF EXISTS {DUE_BY_PRIORITY} RENAME TO {DUE}")


def _due_leads_with_priority() -> bool:
    """True once the claim index under its final name is the new, valid one."""
    definition = online_ddl.index_definition(DUE)
    return (
        definition is not None
        and f"({DUE_COLUMNS})" in definition
        and not online_ddl.index_is_invalid(DUE)
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
