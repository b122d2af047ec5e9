"""Delivery reports pruned with their messages, and a status Wiraya never named never final.

Revision ID: 0011_report_retention
Revises: 0010_raw_sql_rows
Create Date: 2026-12-07

- Two partial indexes on outbox_delivery_reports: by message (the prune deletes a message's
  reports in the chunk that deletes the message) and unmatched reports by when they were
  received (the prune deletes those older than OUTBOX_UNMATCHED_REPORT_RETENTION_SECONDS).
  On PostgreSQL each is built CONCURRENTLY (worker/ops/online_ddl.py), so neither the receiver
  nor a record waits; one an interrupted build left INVALID is built again.
- The early-report trigger ranks reports as the receiver does: only the statuses Wiraya
  documents as final (models.delivery.FINAL_DELIVERY_STATUSES) beat the others. A status it never
  named is kept as seen but is not final, so a made-up one cannot pin a message's status.
  On PostgreSQL the function is replaced in place, in a short transaction that waits for its
  lock a moment at a time (CREATE OR REPLACE also resets how it runs: migration 0012, after
  this one, makes it SECURITY DEFINER); on SQLite the trigger is made anew.

Each step is safe to run again after an interruption (IF NOT EXISTS, OR REPLACE). SQLite runs
the whole migration in the run's one transaction.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from worker.ops import online_ddl

revision: str = "0011_report_retention"
down_revision: str | None = "0010_raw_sql_rows"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The statuses Wiraya documents as final (models.delivery.FINAL_DELIVERY_STATUSES; a test checks that
# they agree). Written out: a migration keeps the rule of its day.
FINAL_DELIVERY_STATUSES = (
    "DELIVERED",
    "FAILURE",
    "INCORRECTNUMBER",
    "NOTREACHED",
    "NOT_DELIVERED",
    "NOT_WHITELISTED",
    "OPTOUT",
    "SPAM",
    "TEST",
    "UNKNOWN",
)
# models/databases/postgresql.py takes the same key (a test checks that they agree).
MATCH_LOCK = 122550254464888
FINAL = "status IN (" + ", ".join(f"'{status}'" for status in FINAL_DELIVERY_STATUSES) + ")"
INDEXES = {
    "ix_outbox_delivery_reports_message_id": ("message_id", "message_id IS NOT NULL"),
    "ix_outbox_delivery_reports_unmatched_received": ("received_at", "message_id IS NULL"),
}


# Migration 0007's function, its rule of a final status made a parameter.
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
            ORDER BY {{final}} DESC, coalesce(done_at, received_at) DESC, id
            LIMIT 1)
        WHERE id = waiting.id;
    END LOOP;
    RETURN NULL;
END $$
"""
# Migration 0006's SQLite trigger, its rule of a final status made a parameter.
SQLITE_TRIGGER = """
CREATE TRIGGER outbox_messages_match_reports
AFTER UPDATE OF tracking_id ON outbox_messages FOR EACH ROW
WHEN NEW.tracking_id IS NOT NULL AND NEW.tracking_id IS NOT OLD.tracking_id
  AND EXISTS (SELECT 1 FROM outbox_delivery_reports WHERE tracking_id = NEW.tracking_id)
BEGIN
    UPDATE outbox_messages SET (delivery_status, delivery_status_at) = (
        SELECT status, coalesce(done_at, received_at) FROM outbox_delivery_reports
        WHERE tracking_id = NEW.tracking_id
        ORDER BY {final} DESC, coalesce(done_at, received_at) DESC, id
        LIMIT 1)
    WHERE id = NEW.id;
    UPDATE outbox_delivery_reports SET message_id = NEW.id
    WHERE tracking_id = NEW.tracking_id AND message_id IS NULL;
END
"""
EARLIER_FINAL = "status <> 'NEXTATTEMPT'"  # 0006 and 0007: every status but NEXTATTEMPT


def _postgresql() -> bool:
    return bool(op.get_context().dialect.name == "postgresql")


def _rank_by(final: str) -> None:
    """(Re)create the early-report trigger's ranking with ``final`` as the final statuses."""
    if _postgresql():
        online_ddl.short_transaction(POSTGRES_FUNCTION.format(final=final))
    else:
        op.execute("DROP TRIGGER IF EXISTS outbox_messages_match_reports")
        op.execute(SQLITE_TRIGGER.format(final=final))


def upgrade() -> None:
    if _postgresql():
        with online_ddl.steps():
            for name, (column, where) in INDEXES.items():
                online_ddl.create_index(name, "outbox_delivery_reports", column, where=where)
            _rank_by(FINAL)
        return
    for name, (column, where) in INDEXES.items():
        op.create_index(
            name,
            "outbox_delivery_reports",
            [column],
            sqlite_where=sa.text(where),
            if_not_exists=True,
        )
    _rank_by(FINAL)


def downgrade() -> None:
    if _postgresql():
        with online_ddl.steps():
            _rank_by(EARLIER_FINAL)
            for name in INDEXES:
                online_ddl.drop_index(name)
        return
    _rank_by(EARLIER_FINAL)
    for name in INDEXES:
        op.drop_index(name, table_name="outbox_delivery_reports", if_exists=True)
