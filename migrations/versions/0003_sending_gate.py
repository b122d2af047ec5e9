"""The sending gate's new shape, refused keys apart, and the claim's token and first due time.

Revision ID: 0003_sending_gate
Revises: 0002
Create Date: 2026-12-01

The gate row gets a version (every claim is guarded by it), the open circuit's probe lease and
cadence, the evidence of answers and failures, a learnt request rate and the largest batch the
API answered; its refused key and 429 spacing give way to a table of refused keys and the
rate. The gate holds no message: it is recreated empty, and a running outbox simply learns its
brakes again. Each message gets the token of the claim that holds it (the record's guard: it
never repeats, unlike an attempt count that `outbox retry` resets) and the time it first fell
due (what OUTBOX_MAX_AGE_SECONDS counts from).

PostgreSQL, beside a running application (worker/ops/online_ddl.py): three short transactions,
each skipped when done: the two nullable columns (a catalogue change), the gate replaced (a
table of one row), the refused keys' new table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.ops import online_ddl

revision: str = "0003_sending_gate"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with online_ddl.steps():
            _upgrade_online()
        return
    _replace_gate()
    _create_refused_keys()
    with op.batch_alter_table("outbox_messages") as table:
        table.add_column(sa.Column("claim_token", sa.BigInteger(), nullable=True))
        table.add_column(sa.Column("first_due_at", timestamp, nullable=True))


def _upgrade_online() -> None:
    online_ddl.short_transaction(
        "ALTER TABLE outbox_messages ADD COLUMN IF NOT EXISTS claim_token BIGINT",
        "ALTER TABLE outbox_messages ADD COLUMN IF NOT EXISTS first_due_at TIMESTAMP WITH TIME ZONE",
    )
    if not online_ddl.column_exists("outbox_dispatch_gate", "version"):
        online_ddl.short_transaction(
            "DROP TABLE outbox_dispatch_gate",
            online_ddl.create_table_sql("outbox_dispatch_gate", *_gate_columns()),
        )
    online_ddl.short_transaction(_create_refused_keys)


def _gate_columns() -> list[sa.schema.SchemaItem]:
    """The new gate's columns (fresh objects for each table built from them)."""
    return [
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("paused_until", timestamp, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("probe_until", timestamp, nullable=True),
        sa.Column("next_probe_at", timestamp, nullable=True),
        sa.Column("last_success_at", timestamp, nullable=True),
        sa.Column("last_failure_at", timestamp, nullable=True),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("rate_ceiling", sa.Float(), nullable=True),
        sa.Column("next_send_at", timestamp, nullable=True),
        sa.Column("batch_limit", sa.Integer(), nullable=True),
        sa.Column("batch_proven", sa.Integer(), nullable=True),
        sa.Column("updated_at", timestamp, nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_outbox_dispatch_gate"),
    ]


def _replace_gate() -> None:
    op.drop_table("outbox_dispatch_gate")
    op.create_table("outbox_dispatch_gate", *_gate_columns())


def _create_refused_keys() -> None:
    op.create_table(
        "outbox_refused_keys",
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("refused_at", timestamp, nullable=False),
        sa.Column("probe_until", timestamp, nullable=True),
        sa.Column("next_probe_at", timestamp, nullable=True),
        sa.Column("cleared_at", timestamp, nullable=True),
        sa.PrimaryKeyConstraint("fingerprint", name="pk_outbox_refused_keys"),
        if_not_exists=True,
    )


def downgrade() -> None:
    with op.batch_alter_table("outbox_messages") as table:
        table.drop_column("first_due_at")
        table.drop_column("claim_token")
    op.drop_table("outbox_refused_keys")
    op.drop_table("outbox_dispatch_gate")
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
