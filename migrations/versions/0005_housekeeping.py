"""Beat's housekeeping schedule: when the prune is next due, kept across restarts.

Revision ID: 0005_housekeeping
Revises: 0004_finished_indexes
Create Date: 2026-12-01

One row per job (today only `prune`), created by beat when missing: a job never run is due
at once. Nothing else reads or writes it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_housekeeping"
down_revision: str | None = "0004_finished_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_housekeeping",
        sa.Column("job", sa.Text(), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("job", name="pk_outbox_housekeeping"),
    )


def downgrade() -> None:
    op.drop_table("outbox_housekeeping")
