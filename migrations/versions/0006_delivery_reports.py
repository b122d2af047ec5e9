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
must create it again. On a large PostgreSQL table, create ix_outbox_messages_tracking_id
CONCURRENTLY by hand before upgrading if writes must not wait for it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_delivery_reports"
down_revision: str | None = "0005_housekeeping"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

timestamp = sa.DateTime(timezone=True)
identity = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# worker/receipts/storage.py takes the same key (a test checks that they agree).
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
CREATE FUNCTION outbox_messages_match_reports() RETURNS trigger LANGUAGE plpgsql AS $$
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
    with op.batch_alter_table("outbox_messages") as table:
        table.add_column(sa.Column("delivery_status", sa.Text(), nullable=True))
        table.add_column(sa.Column("delivery_status_at", timestamp, nullable=True))
    op.create_index(
        "ix_outbox_messages_tracking_id",
        "outbox_messages",
        ["tracking_id"],
        postgresql_where=sa.text("tracking_id IS NOT NULL"),
        sqlite_where=sa.text("tracking_id IS NOT NULL"),
    )
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
    )
    op.create_index(
        "uq_outbox_delivery_reports_tracking_id_status_done_at",
        "outbox_delivery_reports",
        ["tracking_id", "status", "done_at"],
        unique=True,
    )
    op.create_index(
        "uq_outbox_delivery_reports_undated",
        "outbox_delivery_reports",
        ["tracking_id", "status"],
        unique=True,
        postgresql_where=sa.text("done_at IS NULL"),
        sqlite_where=sa.text("done_at IS NULL"),
    )
    op.create_index(
        "ix_outbox_delivery_reports_unmatched",
        "outbox_delivery_reports",
        ["tracking_id"],
        postgresql_where=sa.text("message_id IS NULL"),
        sqlite_where=sa.text("message_id IS NULL"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        op.execute(POSTGRES_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)


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
