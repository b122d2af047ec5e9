"""Each API key's own brakes: Wiraya's rate limit is per account.

Revision ID: 0016_key_gates
Revises: 0015_tenants
Create Date: 2026-12-07

``outbox_key_gates``: one row per key that is not WIRAYA_API_KEY (its fingerprint, never the key),
with that key's 429 pause, its learnt request rate and the cursor of its request slots, a
version that guards the claims of its tenants' batches, and the tenants it serves (as the workers'
WIRAYA_API_KEYS give them: the operator commands name the key by them, never holding a key).
WIRAYA_API_KEY's stay in the gate row.

``outbox_dispatch_gate.api_paused_until``: the part of the gate row's pause that every key
observes (the backoff after request-level failures: the API's health), apart from the 429 pause
of WIRAYA_API_KEY that ``paused_until`` also holds.

PostgreSQL, beside a running application (worker/ops/online_ddl.py): a nullable column (a
catalogue change) and a new table, each in a short transaction, each skipped when done. The new
table holds only what is learnt again: the downgrade drops it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.ops import online_ddl

revision: str = "0016_key_gates"
down_revision: str | None = "0015_tenants"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GATE = "outbox_dispatch_gate"
TABLE = "outbox_key_gates"
timestamp = sa.DateTime(timezone=True)


def _columns() -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("paused_until", timestamp, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("rate", sa.Float(), nullable=True),
        sa.Column("rate_ceiling", sa.Float(), nullable=True),
        sa.Column("next_send_at", timestamp, nullable=True),
        sa.Column("updated_at", timestamp, nullable=True),
        sa.Column("tenants", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", name="pk_outbox_key_gates"),
    ]


def upgrade() -> None:
    online_ddl.add_nullable_column(GATE, sa.Column("api_paused_until", timestamp))
    if op.get_context().dialect.name == "postgresql":
        with online_ddl.steps():
            create = online_ddl.create_table_sql(TABLE, *_columns())
            online_ddl.short_transaction(
                create.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1)
            )
    else:
        op.create_table(TABLE, *_columns(), if_not_exists=True)


def downgrade() -> None:
    op.drop_table(TABLE, if_exists=True)
    online_ddl.drop_column(GATE, "api_paused_until")
