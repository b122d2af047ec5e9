"""A message's suspicion: how many requests holding it failed without an answer.

Revision ID: 0008_suspects
Revises: 0007_match_reports_per_statement
Create Date: 2026-12-07

A message in a request that failed as a whole (5xx, a proxy's page, a timeout) may be the cause
or an outage's bystander: the worker counts such failures here, keeps the count when the row is
released, and sets it back to 0 when a request holding the message is answered. A suspect is
sent alone, after its batch's other messages, so it never holds them back, and a probe takes
the least suspected message (worker/dispatch/sending.py). The worker used to read this from
the text of last_error, which the next attempt overwrites.

A new integer column with a constant default: on PostgreSQL 11 and later a change of the
catalogue only (no table rewrite), made in a short transaction that waits for its lock a moment
at a time (worker/ops/online_ddl.py). IF NOT EXISTS / a look at the columns first makes a re-run
after an interruption harmless, on both databases.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.ops import online_ddl

revision: str = "0008_suspects"
down_revision: str | None = "0007_match_reports_per_statement"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "outbox_messages"
COLUMN = "suspicion"


def _has_column() -> bool:
    columns = sa.inspect(op.get_bind()).get_columns(TABLE)
    return any(column["name"] == COLUMN for column in columns)


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with online_ddl.steps():
            online_ddl.short_transaction(
                f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {COLUMN} integer NOT NULL DEFAULT 0"
            )
    elif not _has_column():
        op.add_column(
            TABLE, sa.Column(COLUMN, sa.Integer(), server_default=sa.text("0"), nullable=False)
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE {TABLE} DROP COLUMN IF EXISTS {COLUMN}")
    elif _has_column():
        op.drop_column(TABLE, COLUMN)
