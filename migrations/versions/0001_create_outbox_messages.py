"""Create outbox_messages, its claim indexes, the dispatch gate and the insert notification.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

timestamp = sa.DateTime(timezone=True)
now = sa.func.now()
json_document = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
STATUSES = "'pending', 'sending', 'accepted', 'failed', 'cancelled'"

# One notification per inserting statement (PostgreSQL folds repeats within a transaction),
# delivered at commit: the dispatcher's wake-up call for the low-latency mode.
NOTIFY_FUNCTION = """
CREATE FUNCTION outbox_messages_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox_messages', '');
    RETURN NULL;
END $$
"""
NOTIFY_TRIGGER = """
CREATE TRIGGER outbox_messages_notify AFTER INSERT ON outbox_messages
FOR EACH STATEMENT EXECUTE FUNCTION outbox_messages_notify()
"""


def upgrade() -> None:
    op.create_table(
        "outbox_messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(),
            primary_key=True,
        ),
        sa.Column("client_message_id", sa.Text(), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("content", json_document, nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", timestamp, server_default=now, nullable=False),
        sa.Column("locked_until", timestamp, nullable=True),
        sa.Column("tracking_id", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", timestamp, server_default=now, nullable=False),
        sa.Column("updated_at", timestamp, server_default=now, nullable=False),
        sa.Column("accepted_at", timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox_messages"),
        sa.UniqueConstraint("client_message_id", name="uq_outbox_messages_client_message_id"),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_outbox_messages_status")),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_outbox_messages_attempts")),
    )
    op.create_index(
        "ix_outbox_messages_due",
        "outbox_messages",
        ["next_attempt_at", "id"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_outbox_messages_lease",
        "outbox_messages",
        ["locked_until"],
        postgresql_where=sa.text("status = 'sending'"),
        sqlite_where=sa.text("status = 'sending'"),
    )
    op.create_table(
        "outbox_dispatch_gate",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("paused_until", timestamp, nullable=True),
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("batch_limit", sa.Integer(), nullable=True),
        sa.Column("refused_key", sa.Text(), nullable=True),
        sa.Column("spacing_ms", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_send_at", timestamp, nullable=True),
        sa.Column("updated_at", timestamp, nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_outbox_dispatch_gate"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(NOTIFY_FUNCTION)
        op.execute(NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER outbox_messages_notify ON outbox_messages")
        op.execute("DROP FUNCTION outbox_messages_notify()")
    op.drop_table("outbox_dispatch_gate")
    op.drop_index("ix_outbox_messages_lease", table_name="outbox_messages")
    op.drop_index("ix_outbox_messages_due", table_name="outbox_messages")
    op.drop_table("outbox_messages")
