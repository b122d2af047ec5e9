"""Early delivery reports matched once per statement instead of once per row (PostgreSQL).

Revision ID: 0007_match_reports_per_statement
Revises: 0006_delivery_reports
Create Date: 2026-12-02

Migration 0006's row trigger ran a plpgsql function for every row whose tracking id a record
set: an advisory lock, a query for its best report, per row; a record of 500 accepted rows
spent about a third of its time there, though a report arrives before its tracking id is
recorded only now and then. This statement-level trigger sees the statement's rows as
transition tables: when no row got a new tracking id it does nothing; otherwise it takes the
same shared advisory lock once (the receiver's exclusive one still orders the two, see
worker/receipts/storage.py) and matches the rows with a report waiting, one by one through
the indexes (a set-based join let the planner scan whole tables for a handful of rows). The
rule is 0006's: a message shows its best report (final beats NEXTATTEMPT, then the later
event, then the first stored). Its own update of the delivery status sets no tracking id, so the trigger
it fires again returns at once. SQLite keeps 0006's trigger, which runs only for rows with a
report waiting.

PostgreSQL, beside a running application: the trigger is replaced in one short transaction that
waits for its lock a moment at a time (worker/ops/online_ddl.py), and can run again.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

from worker.ops import online_ddl

revision: str = "0007_match_reports_per_statement"
down_revision: str | None = "0006_delivery_reports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# models/databases/postgresql.py takes the same key (a test checks that they agree).
MATCH_LOCK = 122550254464888
CHANGED = """
    FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
    WHERE n.tracking_id IS NOT NULL AND n.tracking_id IS DISTINCT FROM o.tracking_id"""

POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION outbox_messages_match_reports() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    waiting record;
BEGIN
    IF NOT EXISTS (SELECT 1 {CHANGED.strip()}) THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock_shared({MATCH_LOCK});
    FOR waiting IN
        SELECT n.id, n.tracking_id {CHANGED.strip()}
          AND EXISTS (SELECT 1 FROM outbox_delivery_reports AS r
                      WHERE r.tracking_id = n.tracking_id AND r.message_id IS NULL)
    LOOP
        UPDATE outbox_delivery_reports SET message_id = waiting.id
        WHERE tracking_id = waiting.tracking_id AND message_id IS NULL;
        UPDATE outbox_messages SET (delivery_status, delivery_status_at) = (
            SELECT status, coalesce(done_at, received_at) FROM outbox_delivery_reports
            WHERE tracking_id = waiting.tracking_id
            ORDER BY status <> 'NEXTATTEMPT' DESC, coalesce(done_at, received_at) DESC, id
            LIMIT 1)
        WHERE id = waiting.id;
    END LOOP;
    RETURN NULL;
END $$
"""
POSTGRES_TRIGGER = """
CREATE TRIGGER outbox_messages_match_reports
AFTER UPDATE ON outbox_messages
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION outbox_messages_match_reports()
"""


def _revision_0006() -> ModuleType:
    """Migration 0006, whose row trigger the downgrade puts back."""
    path = Path(__file__).with_name("0006_delivery_reports.py")
    spec = importlib.util.spec_from_file_location("outbox_migration_0006", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    with online_ddl.steps():
        online_ddl.short_transaction(
            "DROP TRIGGER IF EXISTS outbox_messages_match_reports ON outbox_messages",
            POSTGRES_FUNCTION,
            POSTGRES_TRIGGER,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    earlier = _revision_0006()
    op.execute("DROP TRIGGER outbox_messages_match_reports ON outbox_messages")
    op.execute("DROP FUNCTION outbox_messages_match_reports()")
    op.execute(earlier.POSTGRES_FUNCTION)
    op.execute(earlier.POSTGRES_TRIGGER)
