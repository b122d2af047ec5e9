"""The operators' writes as SQL: prune, and what every chunked write shares (`worker.ops.retry`
and `worker.ops.cancel` hold their own), each one bounded chunk per statement.

Every statement is safe beside running workers and beside the other operator commands:

- It locks the rows it will change first, in the one order of the index that serves their
  status (pending rows by lane, due time and id; finished rows by when they finished, then
  id). Two commands that want the same rows wait for each other in that order and never
  deadlock; a chunk holds at most CHUNK locks, for one short transaction.
- It re-checks the whole selection in the row it finally changes: a lock that waited re-reads
  the newest version of the row, and the UPDATE or DELETE repeats the conditions, so a row
  another command changed meanwhile (a failed row retried, a pending row claimed) is left as
  it now is.
- The dispatcher's claim skips locked rows and its record writes only sending rows, which no
  operator statement selects: a dispatch never waits for an operator.

On SQLite the database lock serializes writers; each statement reads and writes under it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CTE, Connection, and_, delete, func, literal, select

from models import Priority, Status
from models.outbox import outbox_messages as outbox
from worker.ops import retention
from worker.ops.selection import Selection, may_have_reached_wiraya, selected

CHUNK = 5_000

# The order each status's rows are locked in: the order of the index that serves them.
LOCK_ORDER = {
    Status.PENDING: (outbox.c.priority, outbox.c.next_attempt_at, outbox.c.id),
    Status.ACCEPTED: (outbox.c.accepted_at, outbox.c.id),
    Status.FAILED: (outbox.c.updated_at, outbox.c.id),
    Status.CANCELLED: (outbox.c.updated_at, outbox.c.id),
}


def chosen_rows(where: Any, status: Status, chunk: int) -> CTE:
    """Up to ``chunk`` rows matching ``where``, locked one by one in LOCK_ORDER."""
    return (
        select(outbox.c.id)
        .where(where)
        .order_by(*LOCK_ORDER[status])
        .limit(chunk)
        .with_for_update()
        .cte("chosen")
    )


def count_selected(
    connection: Connection,
    selection: Selection,
    *,
    status: Status,
    time_column: str,
    due_before: datetime | None = None,
) -> tuple[int, int, int]:
    """How many rows of ``status`` an operator's selection matches, how many of those first fell
    due before ``due_before``, and how many may have reached Wiraya."""
    first_due = func.coalesce(outbox.c.first_due_at, outbox.c.next_attempt_at)
    old = func.count().filter(first_due < due_before) if due_before is not None else literal(0)
    sent = func.count().filter(may_have_reached_wiraya())
    where = selected(connection, selection, status, time_column)
    matched, older, maybe_sent = connection.execute(
        select(func.count(), old, sent).where(where)
    ).one()
    return int(matched), int(older or 0), int(maybe_sent or 0)


def count_by_lane(
    connection: Connection, selection: Selection, *, status: Status, time_column: str
) -> dict[Priority, int]:
    """How many rows of ``status`` an operator's selection matches, by lane."""
    where = selected(connection, selection, status, time_column)
    statement = select(outbox.c.priority, func.count()).where(where).group_by(outbox.c.priority)
    return {Priority(lane): int(count) for lane, count in connection.execute(statement)}


def count_finished(connection: Connection, *, status: Status, cutoff: datetime) -> int:
    """How many rows of a final status finished before ``cutoff`` (accepted rows by accepted_at,
    failed and cancelled ones by updated_at): what prune_finished removes."""
    statement = select(func.count()).where(finished_before(status, cutoff))
    return int(connection.scalar(statement) or 0)


def prune_finished(connection: Connection, *, status: Status, cutoff: datetime, chunk: int) -> int:
    """Delete up to ``chunk`` of those rows, oldest first, and their delivery reports; callers
    repeat until fewer than ``chunk`` go, so no statement runs long."""
    where = finished_before(status, cutoff)
    chosen = chosen_rows(where, status, chunk)
    statement = delete(outbox).where(outbox.c.id.in_(select(chosen.c.id)), where)
    deleted = list(connection.scalars(statement.returning(outbox.c.id)))
    retention.delete_reports_of(connection, deleted)
    return len(deleted)


def changed_count(connection: Connection, statement: Any) -> int:
    """How many rows ``statement`` changed, counted from RETURNING: the driver's rowcount is
    -1 on SQLite for a statement that starts with WITH."""
    return len(connection.execute(statement.returning(outbox.c.id)).all())


def finished_before(status: Status, cutoff: datetime) -> Any:
    if not status.is_final:
        raise ValueError(f"only final statuses are pruned, not {status.value}")
    column = outbox.c.accepted_at if status is Status.ACCEPTED else outbox.c.updated_at
    return and_(outbox.c.status == status, column < cutoff)
