"""The tenant each message goes out for: its API key, its rate and its share of the sending.

Revision ID: 0015_tenants
Revises: 0014_sending_policy
Create Date: 2026-12-07

``outbox_messages.tenant``: text, not null, default ``''`` (the default tenant, what every
existing row and every plain-SQL insert naming no tenant gets). On PostgreSQL a constant default
is kept in the catalogue, so the column is added without rewriting or reading the table, in a
short transaction that waits for its lock a moment at a time (worker/ops/online_ddl.py);
running it again after an interruption finds the column there and does nothing.

``ix_outbox_messages_tenant_due`` (priority, tenant, next_attempt_at, id) over pending rows:
which tenants have rows due in a lane, and one tenant's batch, without reading another
tenant's backlog; built concurrently on PostgreSQL.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.ops import online_ddl

revision: str = "0015_tenants"
down_revision: str | None = "0014_sending_policy"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "outbox_messages"
COLUMN = "tenant"


INDEX = "ix_outbox_messages_tenant_due"
INDEX_COLUMNS = ["priority", "tenant", "next_attempt_at", "id"]
PENDING = "status = 'pending'"


def upgrade() -> None:
    online_ddl.add_column_with_constant_default(TABLE, sa.Column(COLUMN, sa.Text()), "''")
    if op.get_context().dialect.name == "postgresql":
        with online_ddl.steps():
            online_ddl.create_index(INDEX, TABLE, ", ".join(INDEX_COLUMNS), where=PENDING)
    else:
        op.create_index(
            INDEX, TABLE, INDEX_COLUMNS, sqlite_where=sa.text(PENDING), if_not_exists=True
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with online_ddl.steps():
            online_ddl.drop_index(INDEX)
    else:
        op.drop_index(INDEX, table_name=TABLE, if_exists=True)
    online_ddl.drop_column(TABLE, COLUMN)
