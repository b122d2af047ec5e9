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

from worker.ops import online_ddl

revision: str = "0013_trace_context"
down_revision: str | None = "0012_definer_triggers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "outbox_messages"
COLUMN = "trace_context"


def upgrade() -> None:
    online_ddl.add_nullable_column(TABLE, sa.Column(COLUMN, sa.Text(), nullable=True))


def downgrade() -> None:
    online_ddl.drop_column(TABLE, COLUMN)
