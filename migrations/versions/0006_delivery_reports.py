"""Delivery reports: their table, each message's delivery status, and the early-report trigger.

Revision ID: 0006_delivery_reports
Revises: 0005_housekeeping
Create Date: 2026-12-02

Wiraya may push a report before the worker has recorded the tracking id it names. The receiver
keeps such a report unmatched; a trigger on outbox_messages matches it as soon as a message's
tracking id is set (whatever statement sets it), so the worker's record needs no change:

- PostgreSQL: a BEFORE UPDATE row trigger, fired only when tracking_id changes to a value, sets
  the new row's delivery status from the best report stored and marks those reports matched.
  It takes a shared advisory lock (held to commit) that the receiver takes exclusively when it
  re-matches reports it stored unmatched: whichever of the two commits first, the other sees it.
- SQLite: an AFTER UPDATE row trigger doing the same, only for rows with a report waiting
  (SQLite has one writer at a time, so the receiver's insert and a worker's record never
  interleave).

A later migration that rebuilds outbox_messages on SQLite (batch mode) drops the trigger: it
must create it again.

PostgreSQL, beside a running application (worker/ops/online_ddl.py): the two nullable columns
(a catalogue change), the tracking-id index built concurrently, the reports' table with its
indexes, then the function and trigger, each step a short transaction skipped or redone
harmlessly when run again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.ops import online_ddl

revision: str = "0006_delivery_reports"
down_revision: str | None = "0005_housekeeping"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

timestamp = sa.DateTime(timezone=True)
identity = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# models/databases/postgresql.py takes the same key (a test checks that they agree).
MATCH_LOCK = 122550254464888
FINAL = "status <> 'NEXTATTEMPT'"
BEST_REPORT = f"""
    SELECT status, coalesce(done_at, received_at) FROM outbox_delivery_reports
    WHERE tracking_id = NEW.tracking_id
    ORDER BY {FINAL} DESC, coalesce(done_at, received_at) DESC, id
    LIMIT 1"""
MARK_MATCHED = """
    UPDATE outbox_delivery_reports SET message_id = NEW.id
    WHERE tracking_id = NEW.tracking_id AND message_id IS NULL;"""

POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION outbox_messages_match_reports() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    found_status text;
    found_at timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock_shared({MATCH_LOCK});
    {BEST_REPORT.strip()}
    INTO found_status, found_at;
    IF FOUND THEN
        NEW.delivery_status := found_status;
        NEW.delivery_status_at := found_at;
        {MARK_MATCHED.strip()}
    END IF;
    RETURN NEW;
END $$
"""
POSTGRES_TRIGGER = """
CREATE TRIGGER outbox_messages_match_reports
BEFORE UPDATE OF tracking_id ON outbox_messages FOR EACH ROW
WHEN (NEW.tracking_id IS NOT NULL AND NEW.tracking_id IS DISTINCT FROM OLD.tracking_id)
EXECUTE FUNCTION outbox_messages_match_reports()
"""
SQLITE_TRIGGER = f"""
CREATE TRIGGER outbox_messages_match_reports
AFTER UPDATE OF tracking_id ON outbox_messages FOR EACH ROW
WHEN NEW.tracking_id IS NOT NULL AND NEW.tracking_id IS NOT OLD.tracking_id
  AND EXISTS (SELECT 1 FROM outbox_delivery_reports WHERE tracking_id = NEW.tracking_id)
BEGIN
    UPDATE outbox_messages SET (delivery_status, delivery_status_at) = ({BEST_REPORT})
    WHERE id = NEW.id;
    {MARK_MATCHED.strip()}
END
"""


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        with online_ddl.steps():
            _upgrade_online()
        return
    with op.batch_alter_table("outbox_messages") as table:
        table.add_column(sa.Column("delivery_status", sa.Text(), nullable=True))
        table.add_column(sa.Column("delivery_status_at", timestamp, nullable=True))
    op.create_index(
        "ix_outbox_messages_tracking_id",
        "outbox_messages",
        ["tracking_id"],
        sqlite_where=sa.text("tracking_id IS NOT NULL"),
    )
    _create_reports()
    op.execute(SQLITE_TRIGGER)


def _upgrade_online() -> None:
    online_ddl.short_transaction(
        "ALTER TABLE outbox_messages ADD COLUMN IF NOT EXISTS delivery_status TEXT",
        "ALTER TABLE outbox_messages "
        "ADD COLUMN IF NOT EXISTS delivery_status_at TIMESTAMP WITH TIME ZONE",
    )
    online_ddl.create_index(
        "ix_outbox_messages_tracking_id",
        "outbox_messages",
        "tracking_id",
        where="tracking_id IS NOT NULL",
    )
    online_ddl.short_transaction(_create_reports)
    online_ddl.short_transaction(
        POSTGRES_FUNCTION,
        "DROP TRIGGER IF EXISTS outbox_messages_match_reports ON outbox_messages",
        POSTGRES_TRIGGER,
    )


def _create_reports() -> None:
    """The reports' table and its indexes (new and empty: built in the same transaction)."""
    op.create_table(
        "outbox_delivery_reports",
        sa.Column("id", identity, sa.Identity(), primary_key=True),
        sa.Column("tracking_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("done_at", timestamp, nullable=True),
        sa.Column("received_at", timestamp, nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.Column("message_id", identity, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox_delivery_reports"),
        if_not_exists=True,
    )
    op.create_index(
        "uq_outbox_delivery_reports_tracking_id_status_done_at",
        "outbox_delivery_reports",
        ["tracking_id", "status", "done_at"],
        unique=True,
        if_not_exists=True,
    )
    op.create_index(
        "uq_outbox_delivery_reports_undated",
        "outbox_delivery_reports",
        ["tracking_id", "status"],
        unique=True,
        postgresql_where=sa.text("done_at IS NULL"),
        sqlite_where=sa.text("done_at IS NULL"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_outbox_delivery_reports_unmatched",
        "outbox_delivery_reports",
        ["tracking_id"],
        postgresql_where=sa.text("message_id IS NULL"),
        sqlite_where=sa.text("message_id IS NULL"),
        if_not_exists=True,
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER outbox_messages_match_reports ON outbox_messages")
        op.execute("DROP FUNCTION outbox_messages_match_reports()")
    else:
        op.execute("DROP TRIGGER outbox_messages_match_reports")
    op.drop_table("outbox_delivery_reports")
    op.drop_index("ix_outbox_messages_tracking_id", table_name="outbox_messages")
    with op.batch_alter_table("outbox_messages") as table:
        table.drop_column("delivery_status_at")
        table.drop_column("delivery_status")
