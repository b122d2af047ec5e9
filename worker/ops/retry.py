"""`outbox retry`: failed messages back to pending, due now, with fresh attempts.

Counted first (the plan the operator confirms, with how many would expire again at once),
then moved in chunks of `writes.CHUNK`, one short transaction each, locking rows in the failed
rows' index order like every operator write (`worker.ops.writes`). The selection is bounded by
the moment it was counted: rows that fail meanwhile are not swept along.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from models import Status
from models.outbox import outbox_messages as outbox
from worker.ops import writes
from worker.ops.changes import Plan, check_ids, in_chunks
from worker.ops.selection import Selection, retried_error, selected
from worker.ops.writes import changed_count, chosen_rows


def plan_retry(engine: Engine, selection: Selection, *, now: datetime, max_age: timedelta) -> Plan:
    """How many failed messages the selection matches, and how many of them are too old."""
    bounded = selection.up_to(now)
    with engine.begin() as connection:
        check_ids(connection, selection, Status.FAILED)
        matched, too_old, _ = writes.count_selected(
            connection,
            bounded,
            status=Status.FAILED,
            time_column="updated_at",
            due_before=now - max_age,
        )
    return Plan(bounded, matched, too_old=too_old)


def retry(engine: Engine, plan: Plan, *, now: datetime, renew_age: bool) -> int:
    """Failed → pending, due now, with fresh attempts; returns how many rows moved."""
    return in_chunks(
        engine,
        lambda connection: retry_failed(
            connection, plan.selection, now=now, renew_age=renew_age, chunk=writes.CHUNK
        ),
    )


def retry_failed(
    connection: Connection, selection: Selection, *, now: datetime, renew_age: bool, chunk: int
) -> int:
    """Up to ``chunk`` failed rows of the selection (time range on updated_at, when they
    failed) become pending and due now with a fresh count of attempts; last_error keeps how
    they failed behind the RETRIED mark. With ``renew_age`` their age (OUTBOX_MAX_AGE_SECONDS)
    counts from now: the next claim notes their first due time anew. Returns how many moved."""
    values: dict[str, Any] = {
        "status": Status.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "locked_until": None,
        "last_error": retried_error(),
        "updated_at": now,
    }
    if renew_age:
        values["first_due_at"] = None
    where = selected(connection, selection, Status.FAILED, "updated_at")
    chosen = chosen_rows(where, Status.FAILED, chunk)
    statement = update(outbox).where(outbox.c.id.in_(select(chosen.c.id)), where).values(values)
    return changed_count(connection, statement)
