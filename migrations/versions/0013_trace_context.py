"""The producer's W3C trace context, kept with each message for the worker's and the receiver's spans.

Revision ID: 0013_trace_context
Revises: 0012_definer_triggers
Create Date: 2026-12-07

`enqueue` stores the caller's trace context (``traceparent``, then a space and ``tracestate``
when there is one) while an OpenTelemetry span is active; the batch that sends the message and
the handling of its delivery report link to it (docs/tracing.md). A nullable column without a
default: a catalogue change on PostgreSQL, no rewrite, made in a short transaction that waits
for its lock a moment at a time (worker/ops/online_ddl.py); re-running it after an interruption
finds the column there and does nothing. A plain-SQL insert leaves it null.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.ops import online_ddl

revision: str = "0013_trace_context"
down_revision: str | None = "0012_definer_triggers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "outbox_messages"
COLUMN = "trace_context"


def _postgresql() -> bool:
    return bool(op.get_context().dialect.name == "postgresql")


def _has_column() -> bool:
    """SQLite's ALTER TABLE takes no IF [NOT] EXISTS: look first."""
    return COLUMN in {column["name"] for column in sa.inspect(op.get_bind()).get_columns(TABLE)}


def upgrade() -> None:
    if _postgresql():  # a statement that renders offline too (`alembic upgrade head --sql`)
        with online_ddl.steps():
            online_ddl.short_transaction(
                f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {COLUMN} text"
            )
    elif not _has_column():
        op.add_column(TABLE, sa.Column(COLUMN, sa.Text(), nullable=True))


def downgrade() -> None:
    if _postgresql():
        op.execute(f"ALTER TABLE {TABLE} DROP COLUMN IF EXISTS {COLUMN}")
    elif _has_column():
        # A plain DROP COLUMN (SQLite 3.35 and later): a batch copy of the table would lose
        # its triggers on SQLite.
        op.drop_column(TABLE, COLUMN)
