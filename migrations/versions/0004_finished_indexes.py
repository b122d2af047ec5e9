"""Finished rows by when they finished: one partial index per final status.

Revision ID: 0004_finished_indexes
Revises: 0003_sending_gate
Create Date: 2026-12-02

Prune deletes accepted rows by accepted_at and failed or cancelled ones by updated_at, in
chunks that lock rows in the order of these indexes; `outbox stats` and the metrics count
failed and cancelled rows through them instead of reading the whole table. Each index holds
only the rows of its status. PostgreSQL builds them CONCURRENTLY (worker/ops/online_ddl.py):
reads and writes go on meanwhile, and an index an interrupted build left invalid is built again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.ops import online_ddl

revision: str = "0004_finished_indexes"
down_revision: str | None = "0003_sending_gate"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FINISHED = {"accepted": "accepted_at", "failed": "updated_at", "cancelled": "updated_at"}


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with online_ddl.steps():
            for status, column in FINISHED.items():
                online_ddl.create_index(
                    f"ix_outbox_messages_{status}",
                    "outbox_messages",
                    f"{column}, id",
                    where=f"status = '{status}'",
                )
        return
    for status, column in FINISHED.items():
        where = sa.text(f"status = '{status}'")
        op.create_index(
            f"ix_outbox_messages_{status}",
            "outbox_messages",
            [column, "id"],
            postgresql_where=where,
            sqlite_where=where,
        )


def downgrade() -> None:
    for status in FINISHED:
        op.drop_index(f"ix_outbox_messages_{status}", table_name="outbox_messages")
