"""Rows written by raw SQL: refuse those no worker could move, and keep SQLite's times UTC.

Revision ID: 0010_raw_sql_rows
Revises: 0009_reach_evidence
Create Date: 2026-12-07

A `sending` row without `locked_until` was never claimed (the claim takes a sending row back
when its lease ends, and it had none), and an `accepted` row without `tracking_id` was never
sent: two named CHECK constraints refuse both from now on. Rows already like that are repaired
first: the lease of a sending row ends at once (the claim takes it back), an accepted row
without a tracking id is failed with the reason (it may have been sent by another system:
sending it now could send it twice).

PostgreSQL, beside a running application (worker/ops/online_ddl.py): each constraint is added
NOT VALID in a short transaction (a catalogue change: new writes are checked at once, the table
is not read); the existing rows are repaired in batches of short transactions, each holding a
bounded number of rows; then each constraint is validated on its own, reading the table under
a lock that lets reads and writes go on. Every step can run again after an interruption: a
constraint there is not added again, a repaired row no longer matches its repair, a validated
constraint is not validated again.

SQLite has no ALTER TABLE ... ADD CONSTRAINT: triggers refuse the same rows with the same
names. SQLite also keeps times as text, compared as text by the claim: a `next_attempt_at`
written `2026-12-07T05:00:00Z` sorted after `2026-12-07 06:00:00` and was not due until the
day rolled over, and an offset was ignored. Triggers rewrite any time that SQLite's date
functions read (ISO 8601 with `T`, `Z`, an offset, or without seconds) into the stored form,
UTC `YYYY-MM-DD HH:MM:SS.ffffff`, on insert and update, so the claim keeps reading its index;
a time they cannot read is refused, naming the column.
"""

from collections.abc import Sequence

from alembic import op

from worker.ops import online_ddl

revision: str = "0010_raw_sql_rows"
down_revision: str | None = "0009_reach_evidence"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "outbox_messages"
# name -> (a status, the column a row of that status cannot do without, why)
RULES = {
    "ck_outbox_messages_sending_lease": (
        "sending",
        "locked_until",
        "a sending row needs locked_until, the end of its lease",
    ),
    "ck_outbox_messages_accepted_tracking_id": (
        "accepted",
        "tracking_id",
        "an accepted row needs the tracking_id Wiraya gave it",
    ),
}
# (what a repair sets, on the rows it repairs), each in the order of RULES
REPAIRS = [
    ("locked_until = updated_at", "status = 'sending' AND locked_until IS NULL"),
    (
        "status = 'failed', last_error = "
        "'invalid: accepted without a tracking id (written by plain SQL), never sent'",
        "status = 'accepted' AND tracking_id IS NULL",
    ),
]
TIMES = ("next_attempt_at", "expires_at", "locked_until")


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        _upgrade_postgresql()
    else:
        _upgrade_sqlite()


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        for name in RULES:
            op.execute(f"ALTER TABLE {TABLE} DROP CONSTRAINT IF EXISTS {name}")
    else:
        for trigger in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")


def _upgrade_postgresql() -> None:
    with online_ddl.steps():
        for name, (status, column, _why) in RULES.items():
            online_ddl.add_check_constraint_not_valid(
                TABLE, name, f"status <> '{status}' OR {column} IS NOT NULL"
            )
        for assignments, condition in REPAIRS:
            online_ddl.update_in_batches(TABLE, assignments, condition)
        for name in RULES:
            online_ddl.validate_constraint(TABLE, name)


# -- SQLite ---------------------------------------------------------------------------------


def _stored_form(value: str) -> str:
    """SQL: whether ``value`` is already UTC text as the outbox writes it (or NULL)."""
    return (
        f"({value} IS NULL OR ({value} GLOB "
        "'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]*' "
        f"AND substr({value}, 20) NOT GLOB '*[^0-9.]*'))"
    )


def _in_stored_form(value: str) -> str:
    """SQL: ``value`` rewritten as UTC text, microseconds included (SQLite keeps milliseconds)."""
    return (
        f"CASE WHEN {_stored_form(value)} THEN {value} "
        f"ELSE strftime('%Y-%m-%d %H:%M:%f', {value}) || '000' END"
    )


def _refusals() -> dict[str, str]:
    """SQL: for each reason a new row is refused, the condition that refuses it."""
    refusals = {
        f"{name}: {why}": f"(NEW.status = '{status}' AND NEW.{column} IS NULL)"
        for name, (status, column, why) in RULES.items()
    }
    for column in TIMES:
        value = f"NEW.{column}"
        refusals[f"{column}: not a time SQLite can read (write ISO 8601)"] = (
            f"(NOT {_stored_form(value)} AND strftime('%s', {value}) IS NULL)"
        )
    return refusals


def _refusing_trigger(event: str) -> str:
    """A trigger body that raises the first refusal's reason; it runs only when one applies."""
    refusals = _refusals()
    raises = "\n    ".join(
        f"SELECT RAISE(ABORT, '{reason}') WHERE {condition};"
        for reason, condition in refusals.items()
    )
    return f"{event} ON {TABLE} WHEN {' OR '.join(refusals.values())}\nBEGIN\n    {raises}\nEND"


def _normalise(row: str) -> str:
    assignments = ", ".join(f"{column} = {_in_stored_form(f'{row}.{column}')}" for column in TIMES)
    return f"UPDATE {TABLE} SET {assignments} WHERE id = {row}.id;"


NOT_STORED_FORM = " OR ".join(f"NOT {_stored_form(f'NEW.{column}')}" for column in TIMES)
SQLITE_TRIGGERS = {
    "outbox_messages_refuse_insert": _refusing_trigger("BEFORE INSERT"),
    "outbox_messages_refuse_update": _refusing_trigger(
        f"BEFORE UPDATE OF status, tracking_id, {', '.join(TIMES)}"
    ),
    "outbox_messages_utc_insert": (
        f"AFTER INSERT ON {TABLE} WHEN {NOT_STORED_FORM}\nBEGIN\n    {_normalise('NEW')}\nEND"
    ),
    "outbox_messages_utc_update": (
        f"AFTER UPDATE OF {', '.join(TIMES)} ON {TABLE} WHEN {NOT_STORED_FORM}\n"
        f"BEGIN\n    {_normalise('NEW')}\nEND"
    ),
}


def _upgrade_sqlite() -> None:
    for assignments, condition in REPAIRS:
        op.execute(f"UPDATE {TABLE} SET {assignments} WHERE {condition}")
    for column in TIMES:
        op.execute(
            f"UPDATE {TABLE} SET {column} = {_in_stored_form(column)} "
            f"WHERE NOT {_stored_form(column)} AND strftime('%s', {column}) IS NOT NULL"
        )
    for name, body in SQLITE_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER IF NOT EXISTS {name}\n{body}")
