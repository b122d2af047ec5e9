"""The early-report trigger runs with its owner's rights; the producer's duplicate check too.

Revision ID: 0012_definer_triggers
Revises: 0011_report_retention
Create Date: 2026-12-07

A role per process (docs/security.md#a-role-per-process; `outbox grants`) gives the worker no right on
outbox_delivery_reports, yet every record that sets a tracking id fires the trigger of
migrations 0006/0007, which reads and updates that table. Run with the worker's rights, the
record failed after the API had accepted the batch. The trigger's function now runs
``SECURITY DEFINER`` (as the owner who ran the migrations) with its ``search_path`` fixed to the
outbox's schema, so no caller can put a table of its own in front of the outbox's; its body
stays where 0007 wrote it (an ``ALTER FUNCTION`` changes only how it runs). Nobody needs to call
it directly: EXECUTE is revoked from PUBLIC (a trigger runs whatever its caller may execute).

The producer's role may not read other messages' recipients and contents. ``enqueue(...,
if_exists="return")`` must still tell whether the row holding a client_message_id holds the same
message: ``outbox_message_is(client_message_id, recipient, content)`` answers that, and only
that, with the owner's rights; `outbox grants` lets the producer execute it.

PostgreSQL only: SQLite has no roles, so this revision changes nothing there. Its statements
are idempotent (``ALTER FUNCTION``, ``CREATE OR REPLACE``, ``REVOKE``) and run as one short
transaction that waits for its locks a moment at a time (worker/ops/online_ddl.py), so a re-run
after an interruption is safe. It must come after every revision that replaces the trigger's
function (0011): ``CREATE OR REPLACE FUNCTION`` resets ``SECURITY DEFINER`` and the search path.
"""

from collections.abc import Sequence

from alembic import op

from worker.ops import online_ddl

revision: str = "0012_definer_triggers"
down_revision: str | None = "0011_report_retention"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MATCH_FUNCTION = "outbox_messages_match_reports()"
SAME_MESSAGE_FUNCTION = "outbox_message_is(text, text, jsonb)"
# The search path is the outbox's schema (where the migration runs), then pg_temp last, as
# PostgreSQL advises for SECURITY DEFINER functions; found when the statement runs, so that the
# SQL `alembic upgrade --sql` prints holds it too.
DEFINER = """
DO $$ BEGIN
EXECUTE format(
    'ALTER FUNCTION outbox_messages_match_reports() SECURITY DEFINER SET search_path = %I, pg_temp',
    current_schema());
EXECUTE format($sql$
CREATE OR REPLACE FUNCTION outbox_message_is(
    wanted_client_message_id text, wanted_recipient text, wanted_content jsonb
) RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER SET search_path = %I, pg_temp AS $body$
    SELECT recipient = wanted_recipient AND content = wanted_content
    FROM outbox_messages WHERE client_message_id = wanted_client_message_id
$body$ $sql$, current_schema());
END $$
"""


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    with online_ddl.steps():
        online_ddl.short_transaction(
            DEFINER,
            f"REVOKE EXECUTE ON FUNCTION {MATCH_FUNCTION} FROM PUBLIC",
            f"REVOKE EXECUTE ON FUNCTION {SAME_MESSAGE_FUNCTION} FROM PUBLIC",
        )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(f"DROP FUNCTION IF EXISTS {SAME_MESSAGE_FUNCTION}")
    op.execute(f"GRANT EXECUTE ON FUNCTION {MATCH_FUNCTION} TO PUBLIC")
    op.execute(f"ALTER FUNCTION {MATCH_FUNCTION} SECURITY INVOKER RESET search_path")
