"""Evidence that a message may have reached Wiraya, kept in a column no later attempt clears.

Revision ID: 0009_reach_evidence
Revises: 0008_suspects
Create Date: 2026-12-07

`outbox cancel` leaves pending the messages a request may already have delivered. That
evidence lived in `last_error`, which the next attempt overwrites: a timeout followed by a
429, or by a release with no reason, read as "never sent". The record now sets
`reach_evidence` whenever a request holding the message ended with its outcome unknown, and
nothing clears it. A nullable column without a default: a catalogue change on PostgreSQL,
no rewrite, made in a short transaction that waits for its lock a moment at a time
(worker/ops/online_ddl.py); re-running it after an interruption finds the column there and
does nothing.
"""

from collections.abc import Sequence

import sqlalchemy as sa

from worker.ops import online_ddl

revision: str = "0009_reach_evidence"
down_revision: str | None = "0008_suspects"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "outbox_messages"
COLUMN = "reach_evidence"


def upgrade() -> None:
    online_ddl.add_nullable_column(TABLE, sa.Column(COLUMN, sa.Text(), nullable=True))


def downgrade() -> None:
    online_ddl.drop_column(TABLE, COLUMN)
