"""The operators' SQL: what `outbox stats`, the metrics endpoint and the demo read, and what
`outbox retry`, `cancel` and `prune` change. Every statement serves PostgreSQL and SQLite alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, literal, select, update

from models import Status
from models.outbox import outbox_messages as outbox


@dataclass(frozen=True)
class QueueFigures:
    """The backlog at a glance, as `outbox stats` and the metrics endpoint show it."""

    by_status: dict[str, int]  # every status, zeros included
    oldest_unfinished_at: datetime | None  # created_at of the oldest pending or sending row
    due_now: int  # claimable now: due pending rows and sending rows whose lease ended
    retrying: int  # pending after a failed try (last_error set), waiting for next_attempt_at
    leases_in_flight: int  # sending, lease still running: a worker holds them
    expired_leases: int  # sending, lease ended: its worker died or hung; due again


@dataclass(frozen=True)
class Selection:
    """The rows an operator means; every criterion given must match (none given: all rows).

    ``since``/``until`` bound a time column that the statement names (``until`` excluded).
    """

    client_message_ids: tuple[str, ...] = ()
    error: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _selected(selection: Selection, status: Status, time_column: str) -> Any:
    """The WHERE clause of an operator's selection among rows of ``status``."""
    conditions = [outbox.c.status == status]
    if selection.client_message_ids:
        conditions.append(outbox.c.client_message_id.in_(selection.client_message_ids))
    if selection.error is not None:
        lowered = func.lower(outbox.c.last_error)
        conditions.append(lowered.contains(selection.error.lower(), autoescape=True))
    column = outbox.c[time_column]
    if selection.since is not None:
        conditions.append(column >= selection.since)
    if selection.until is not None:
        conditions.append(column < selection.until)
    return and_(*conditions)


# -- status_counts -- How many rows hold each status, every status listed (zeros included).
def status_counts(connection: Connection) -> dict[str, int]:
    counts = {status.value: 0 for status in Status}
    statement = select(outbox.c.status, func.count()).group_by(outbox.c.status)
    for status, count in connection.execute(statement):
        counts[status] = int(count)
    return counts


# -- queue_figures -- Counts by status, then one pass over pending rows and one over sending
# rows (each served by its partial index) for the oldest, the due, the retrying and leases.
def queue_figures(connection: Connection, *, now: datetime) -> QueueFigures:
    pending = select(
        func.min(outbox.c.created_at),
        func.count().filter(outbox.c.next_attempt_at <= now),
        func.count().filter(outbox.c.last_error.is_not(None)),
    ).where(outbox.c.status == Status.PENDING)
    sending = select(
        func.min(outbox.c.created_at),
        func.count().filter(outbox.c.locked_until > now),
        func.count().filter(outbox.c.locked_until <= now),
    ).where(outbox.c.status == Status.SENDING)
    oldest_pending, due, retrying = connection.execute(pending).one()
    oldest_sending, in_flight, expired = connection.execute(sending).one()
    oldest = [moment for moment in (oldest_pending, oldest_sending) if moment is not None]
    return QueueFigures(
        by_status=status_counts(connection),
        oldest_unfinished_at=_aware(min(oldest)) if oldest else None,
        due_now=int(due) + int(expired),
        retrying=int(retrying),
        leases_in_flight=int(in_flight),
        expired_leases=int(expired),
    )


def _aware(value: Any) -> datetime:
    """An aggregate's timestamp as aware UTC (SQLite returns min() as naive text)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# -- failure_reasons -- The commonest last_error texts among failed rows, most frequent first.
def failure_reasons(connection: Connection, *, limit: int) -> list[tuple[str, int]]:
    count = func.count().label("count")
    statement = (
        select(func.coalesce(outbox.c.last_error, "(no reason recorded)"), count)
        .where(outbox.c.status == Status.FAILED)
        .group_by(outbox.c.last_error)
        .order_by(count.desc(), outbox.c.last_error)
        .limit(limit)
    )
    return [(str(reason), int(number)) for reason, number in connection.execute(statement)]


# -- find_message -- One row by client_message_id, every column, or None.
def find_message(connection: Connection, client_message_id: str) -> dict[str, Any] | None:
    statement = select(outbox).where(outbox.c.client_message_id == client_message_id)
    row = connection.execute(statement).one_or_none()
    return None if row is None else dict(row._mapping)


# -- unknown_ids -- Which of the given client_message_ids are not in the outbox, in order.
def unknown_ids(connection: Connection, client_message_ids: Sequence[str]) -> list[str]:
    statement = select(outbox.c.client_message_id).where(
        outbox.c.client_message_id.in_(client_message_ids)
    )
    known = set(connection.scalars(statement))
    return [value for value in client_message_ids if value not in known]


# -- count_selected -- How many rows of ``status`` an operator's selection matches, and how
# many of those were created before ``created_before`` (0 when it is not given).
def count_selected(
    connection: Connection,
    selection: Selection,
    *,
    status: Status,
    time_column: str,
    created_before: datetime | None = None,
) -> tuple[int, int]:
    old = (
        func.count().filter(outbox.c.created_at < created_before)
        if created_before is not None
        else literal(0)
    )
    statement = select(func.count(), old).where(_selected(selection, status, time_column))
    matched, older = connection.execute(statement).one()
    return int(matched), int(older or 0)


# -- retry_failed -- Failed rows of the selection (time range on updated_at, when they
# failed) become pending and due now with a fresh count of attempts; last_error is kept as
# history. With ``renew_age`` their age (OUTBOX_MAX_AGE_SECONDS) counts from now.
def retry_failed(
    connection: Connection, selection: Selection, *, now: datetime, renew_age: bool
) -> int:
    values: dict[str, Any] = {
        "status": Status.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "locked_until": None,
        "updated_at": now,
    }
    if renew_age:
        values["created_at"] = now
    where = _selected(selection, Status.FAILED, "updated_at")
    return int(connection.execute(update(outbox).where(where).values(values)).rowcount)


# -- cancel_pending -- Pending rows of the selection (time range on created_at) become
# cancelled. Sending rows are never touched: their API call may be under way.
def cancel_pending(connection: Connection, selection: Selection, *, now: datetime) -> int:
    where = _selected(selection, Status.PENDING, "created_at")
    statement = update(outbox).where(where).values(status=Status.CANCELLED, updated_at=now)
    return int(connection.execute(statement).rowcount)


# -- count_finished -- How many rows of a final status finished before ``cutoff`` (accepted
# rows by accepted_at, failed and cancelled ones by updated_at): what prune_finished removes.
def count_finished(connection: Connection, *, status: Status, cutoff: datetime) -> int:
    statement = select(func.count()).where(_finished_before(status, cutoff))
    return int(connection.scalar(statement) or 0)


# -- prune_finished -- Delete up to ``chunk`` of those rows; callers repeat until fewer
# than ``chunk`` go, so no statement runs long.
def prune_finished(connection: Connection, *, status: Status, cutoff: datetime, chunk: int) -> int:
    old = select(outbox.c.id).where(_finished_before(status, cutoff)).limit(chunk)
    result = connection.execute(delete(outbox).where(outbox.c.id.in_(old.scalar_subquery())))
    return int(result.rowcount)


def _finished_before(status: Status, cutoff: datetime) -> Any:
    if not status.is_final:
        raise ValueError(f"only final statuses are pruned, not {status.value}")
    column = outbox.c.accepted_at if status is Status.ACCEPTED else outbox.c.updated_at
    return and_(outbox.c.status == status, column < cutoff)


# -- content_type_counts -- Rows by content $type and status (the demo's summary table).
def content_type_counts(connection: Connection) -> dict[tuple[str, str], int]:
    content_type = outbox.c.content["$type"].as_string()
    statement = select(content_type, outbox.c.status, func.count()).group_by(
        content_type, outbox.c.status
    )
    return {
        (str(kind), str(status)): int(count)
        for kind, status, count in connection.execute(statement)
    }


# -- accepted_tracking_ids -- client_message_id -> tracking_id of every accepted row (the
# demo checks them against the sandbox's ledger).
def accepted_tracking_ids(connection: Connection) -> dict[str, str | None]:
    statement = select(outbox.c.client_message_id, outbox.c.tracking_id).where(
        outbox.c.status == Status.ACCEPTED
    )
    return {str(cid): tracking for cid, tracking in connection.execute(statement)}


# -- total_attempts -- Sends to the API over all rows (the sum of attempts).
def total_attempts(connection: Connection) -> int:
    return int(connection.scalar(select(func.coalesce(func.sum(outbox.c.attempts), 0))) or 0)
