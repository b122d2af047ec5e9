"""The daily quotas per tenant: a counter per quota day and tenant, and the day a message counted.

Revision ID: 0017_tenant_quotas
Revises: 0016_key_gates
Create Date: 2026-12-07

- ``outbox_tenant_quotas``: what each tenant sent on each quota day (docs/tenants.md), moved
  forward by one conditional statement per batch; new and empty, created in one transaction.
- ``outbox_messages.quota_day``: a nullable date without a default, a catalogue change on
  PostgreSQL (a short transaction that waits for its lock a moment at a time,
  worker/ops/online_ddl.py); running it again after an interruption finds it there.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.ops import online_ddl

revision: str = "0017_tenant_quotas"
down_revision: str | None = "0016_key_gates"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "outbox_messages"
COLUMN = "quota_day"
COUNTERS = "outbox_tenant_quotas"


def upgrade() -> None:
    op.create_table(
        COUNTERS,
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("messages", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("segments", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint(
            "messages >= 0 AND segments >= 0", name="ck_outbox_tenant_quotas_counts"
        ),
        sa.PrimaryKeyConstraint("day", "tenant", name="pk_outbox_tenant_quotas"),
        if_not_exists=True,
    )
    online_ddl.add_nullable_column(TABLE, sa.Column(COLUMN, sa.Date()))


def downgrade() -> None:
    online_ddl.drop_column(TABLE, COLUMN)
    op.drop_table(COUNTERS, if_exists=True)
