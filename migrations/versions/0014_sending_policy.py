"""The sending policy's tables and columns: opt-outs, per-recipient pacing, SMS segments.

Revision ID: 0014_sending_policy
Revises: 0013_trace_context
Create Date: 2026-12-07

- ``outbox_suppressions``: the opt-out list the screen reads (docs/sending-policy.md).
- ``outbox_recipient_pacing``: when each recipient's last message was sent, which a worker
  moves forward in one conditional statement before it sends to them.
- ``outbox_messages.segments``: a nullable smallint without a default, a catalogue change.
- ``ix_outbox_messages_recipient``: a recipient's other messages (the duplicate guard's earlier
  copies, the delivery statuses that add an opt-out), built concurrently.

On PostgreSQL each step is a short transaction or a concurrent build (worker/ops/online_ddl.py),
each skipped or redone harmlessly when the migration runs again after an interruption.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.ops import online_ddl

revision: str = "0014_sending_policy"
down_revision: str | None = "0013_trace_context"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "outbox_messages"
COLUMN = "segments"
INDEX = "ix_outbox_messages_recipient"
timestamp = sa.DateTime(timezone=True)


def _postgresql() -> bool:
    return bool(op.get_context().dialect.name == "postgresql")


def _create_tables() -> None:
    """The two new tables (new and empty: created in one transaction)."""
    op.create_table(
        "outbox_suppressions",
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("created_at", timestamp, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "scope IN ('campaigns', 'all')", name="ck_outbox_suppressions_scope"
        ),
        sa.PrimaryKeyConstraint("recipient", name="pk_outbox_suppressions"),
        if_not_exists=True,
    )
    op.create_table(
        "outbox_recipient_pacing",
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("sent_at", timestamp, nullable=False),
        sa.PrimaryKeyConstraint("recipient", name="pk_outbox_recipient_pacing"),
        if_not_exists=True,
    )


def _has_column() -> bool:
    """SQLite's ALTER TABLE takes no IF [NOT] EXISTS: look first."""
    return COLUMN in {column["name"] for column in sa.inspect(op.get_bind()).get_columns(TABLE)}


def upgrade() -> None:
    if _postgresql():
        with online_ddl.steps():
            online_ddl.short_transaction(
                f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {COLUMN} smallint",
                _create_tables,
            )
            online_ddl.create_index(INDEX, TABLE, "recipient, id")
        return
    if not _has_column():
        op.add_column(TABLE, sa.Column(COLUMN, sa.SmallInteger(), nullable=True))
    _create_tables()
    op.create_index(INDEX, TABLE, ["recipient", "id"], if_not_exists=True)


def downgrade() -> None:
    if _postgresql():
        with online_ddl.steps():
            online_ddl.drop_index(INDEX)
        op.execute(f"ALTER TABLE {TABLE} DROP COLUMN IF EXISTS {COLUMN}")
    else:
        op.drop_index(INDEX, table_name=TABLE, if_exists=True)
        if _has_column():
            op.drop_column(TABLE, COLUMN)  # a plain DROP COLUMN: a batch copy loses triggers
    op.drop_table("outbox_recipient_pacing", if_exists=True)
    op.drop_table("outbox_suppressions", if_exists=True)
