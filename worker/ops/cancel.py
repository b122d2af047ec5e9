"""`outbox cancel`: pending messages withdrawn before they reach Wiraya.

Counted first (the plan the operator confirms, with how many may already have reached Wiraya:
those stay pending unless the operator includes them), then changed in chunks of
`writes.CHUNK`, one short transaction each, locking rows in the pending rows' index order like
every operator write (`worker.ops.writes`). Sending rows are never touched: their API call may
be under way. The selection is bounded by the moment it was counted.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, Engine, and_, select, update

from models import Status
from models.outbox import outbox_messages as outbox
from worker.ops import writes
from worker.ops.changes import Plan, check_ids, in_chunks
from worker.ops.selection import Selection, may_have_reached_wiraya, selected
from worker.ops.writes import changed_count, chosen_rows


def plan_cancel(engine: Engine, selection: Selection, *, now: datetime) -> Plan:
    """How many pending messages the selection matches (and by lane), how many may have been
    sent, and how many of the selection are being sent now (which cancel leaves alone)."""
    bounded = selection.up_to(now)
    with engine.begin() as connection:
        check_ids(connection, selection, Status.PENDING)
        matched, _, maybe_sent = writes.count_selected(
            connection, bounded, status=Status.PENDING, time_column="created_at"
        )
        by_lane = writes.count_by_lane(
            connection, bounded, status=Status.PENDING, time_column="created_at"
        )
        sending, _, _ = writes.count_selected(
            connection, bounded, status=Status.SENDING, time_column="created_at"
        )
    return Plan(bounded, matched, maybe_sent=maybe_sent, by_lane=by_lane, sending=sending)


def cancel(
    engine: Engine,
    plan: Plan,
    *,
    now: datetime,
    include_sent: bool,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Pending → cancelled (only never-sent rows unless ``include_sent``); returns how many.
    ``progress`` hears the running total after each chunk."""
    return in_chunks(
        engine,
        lambda connection: cancel_pending(
            connection, plan.selection, now=now, include_sent=include_sent, chunk=writes.CHUNK
        ),
        progress,
    )


def cancel_pending(
    connection: Connection,
    selection: Selection,
    *,
    now: datetime,
    include_sent: bool,
    chunk: int,
) -> int:
    """Up to ``chunk`` pending rows of the selection (time range on created_at) become cancelled;
    unless ``include_sent``, only rows that cannot have reached Wiraya. Sending rows are never
    touched: their API call may be under way."""
    where = selected(connection, selection, Status.PENDING, "created_at")
    if not include_sent:
        where = and_(where, ~may_have_reached_wiraya())
    chosen = chosen_rows(where, Status.PENDING, chunk)
    statement = (
        update(outbox)
        .where(outbox.c.id.in_(select(chosen.c.id)), where)
        .values(status=Status.CANCELLED, updated_at=now)
    )
    return changed_count(connection, statement)
