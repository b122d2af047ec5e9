"""Every SQL statement the worker runs on the outbox, each named and explained in one line.

Statements take a Connection and an explicit ``now`` so that tests move time instead of
sleeping. PostgreSQL gets ``FOR UPDATE SKIP LOCKED``; SQLite (one worker) gets the same
statements without row locks, its writes being serialized by the database lock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Integer,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy import (
    cast as cast_,
)
from sqlalchemy.dialects import postgresql, sqlite

from models import OutboxMessage, Status, dispatch_gate
from models.gate import GATE_NAME

outbox = cast(Table, OutboxMessage.__table__)
gate = dispatch_gate


@dataclass(frozen=True)
class ClaimedRow:
    """A row a worker holds under lease; ``attempts`` already counts this claim."""

    id: int
    client_message_id: str
    recipient: str
    content: Any
    attempts: int
    created_at: datetime


@dataclass(frozen=True)
class RowResult:
    """What one claimed row becomes; written for the whole batch by ``record``."""

    id: int
    claimed_attempts: int
    status: Status
    attempts: int
    next_attempt_at: datetime | None = None
    tracking_id: str | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class Gate:
    """The shared sending state every worker reads before a batch."""

    paused_until: datetime | None
    failures: int
    reason: str | None
    batch_limit: int | None
    refused_key: str | None
    spacing: timedelta


def _decoded(content: str | None) -> Any:
    """A row's content as JSON, or the text itself when it is not JSON (screening refuses it)."""
    try:
        return json.loads(content) if content is not None else None
    except ValueError:
        return content


def _due(now: datetime) -> Any:
    """Rows a worker may claim: due pending rows and sending rows whose lease ended."""
    return or_(
        and_(outbox.c.status == Status.PENDING, outbox.c.next_attempt_at <= now),
        and_(outbox.c.status == Status.SENDING, outbox.c.locked_until <= now),
    )


# -- claim -- Take up to ``limit`` due rows, oldest first, in one statement: mark them
# sending under a lease and count the attempt. Each source is read through its own partial
# index (expired leases, then due pending rows) and locked with SKIP LOCKED, so concurrent
# workers never wait for each other nor take the same row.
def _claim_statement() -> Any:
    limit = bindparam("limit", type_=Integer())
    now = bindparam("now", type_=outbox.c.updated_at.type)
    locked_until = bindparam("locked_until", type_=outbox.c.locked_until.type)
    expired = (
        select(outbox.c.id)
        .where(outbox.c.status == Status.SENDING, outbox.c.locked_until <= now)
        .order_by(outbox.c.locked_until)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("expired")
    )
    pending = (
        select(outbox.c.id)
        .where(outbox.c.status == Status.PENDING, outbox.c.next_attempt_at <= now)
        .order_by(outbox.c.next_attempt_at, outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("pending")
    )
    chosen = union_all(select(expired.c.id), select(pending.c.id)).limit(limit).subquery()
    return (
        update(outbox)
        .where(outbox.c.id.in_(select(chosen.c.id)))
        .values(
            status=Status.SENDING,
            locked_until=locked_until,
            attempts=outbox.c.attempts + 1,
            updated_at=now,
        )
        .returning(
            outbox.c.id,
            outbox.c.client_message_id,
            outbox.c.recipient,
            # As text, decoded row by row: on SQLite a raw-SQL row may hold anything, and
            # one undecodable row must fail alone instead of breaking the whole batch.
            cast_(outbox.c.content, Text).label("content"),
            outbox.c.attempts,
            outbox.c.created_at,
        )
    )


# Built once: the claim runs for every batch, and building it costs more than running it.
CLAIM = _claim_statement()


def claim(
    connection: Connection, *, limit: int, lease: timedelta, now: datetime
) -> list[ClaimedRow]:
    parameters = {"limit": limit, "now": now, "locked_until": now + lease}
    rows = [
        ClaimedRow(
            row.id,
            row.client_message_id,
            row.recipient,
            _decoded(row.content),
            row.attempts,
            row.created_at,
        )
        for row in connection.execute(CLAIM, parameters)
    ]
    rows.sort(key=lambda row: row.id)
    return rows


# -- record -- Write every claimed row's result in one statement. The guard (still
# sending, same attempt number as at claim) stops a worker whose lease ended from
# overwriting the newer claim of another. Returns the ids it wrote.
_RECORD_UPDATE = """
UPDATE outbox_messages AS m SET
    status = v.status,
    attempts = v.attempts,
    next_attempt_at = coalesce(v.next_attempt_at, m.next_attempt_at),
    locked_until = NULL,
    tracking_id = coalesce(v.tracking_id, m.tracking_id),
    last_error = v.last_error,
    accepted_at = CASE WHEN v.status = 'accepted' THEN :now ELSE m.accepted_at END,
    updated_at = :now"""
_RECORD_GUARD = "WHERE m.id = v.id AND m.status = 'sending' AND m.attempts = v.claimed_attempts"
# PostgreSQL reads the results as a typed record set from one jsonb parameter ...
RECORD_POSTGRES = f"""{_RECORD_UPDATE}
FROM jsonb_to_recordset(CAST(:results AS jsonb)) AS v(
    id bigint, claimed_attempts integer, status text, attempts integer,
    next_attempt_at timestamptz, tracking_id text, last_error text)
{_RECORD_GUARD}
RETURNING m.id"""
# ... and SQLite from the same JSON through json_each (its RETURNING takes no alias).
RECORD_SQLITE = f"""
WITH v AS (
    SELECT value ->> 'id' AS id, value ->> 'claimed_attempts' AS claimed_attempts,
           value ->> 'status' AS status, value ->> 'attempts' AS attempts,
           value ->> 'next_attempt_at' AS next_attempt_at,
           value ->> 'tracking_id' AS tracking_id, value ->> 'last_error' AS last_error
    FROM json_each(:results)){_RECORD_UPDATE}
FROM v
{_RECORD_GUARD}
RETURNING id"""


def record(connection: Connection, results: Sequence[RowResult], *, now: datetime) -> set[int]:
    if not results:
        return set()
    is_sqlite = connection.dialect.name == "sqlite"
    payload = json.dumps([_result_json(result, is_sqlite) for result in results])
    sql = RECORD_SQLITE if is_sqlite else RECORD_POSTGRES
    statement = text(sql).bindparams(bindparam("now", type_=OutboxMessage.updated_at.type))
    return set(connection.scalars(statement, {"results": payload, "now": now}))


def _result_json(result: RowResult, is_sqlite: bool) -> dict[str, Any]:
    return {
        "id": result.id,
        "claimed_attempts": result.claimed_attempts,
        "status": result.status.value,
        "attempts": result.attempts,
        "next_attempt_at": _timestamp(result.next_attempt_at, is_sqlite),
        "tracking_id": result.tracking_id,
        "last_error": result.last_error,
    }


def _timestamp(value: datetime | None, is_sqlite: bool) -> str | None:
    """A timestamp as each database compares it: SQLite stores naive UTC text."""
    if value is None:
        return None
    value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(sep=" ") if is_sqlite else value.isoformat()


# -- count_due -- How many rows are due now, counting no further than ``cap`` (cheap on
# a large backlog: the partial indexes stop the scan at the cap).
def count_due(connection: Connection, *, now: datetime, cap: int) -> int:
    due = select(literal(1)).where(_due(now)).limit(cap).subquery()
    return int(connection.scalar(select(func.count()).select_from(due)) or 0)


# -- read_gate -- The shared sending state; creates its row the first time.
def read_gate(connection: Connection) -> Gate:
    row = connection.execute(select(gate).where(gate.c.name == GATE_NAME)).one_or_none()
    if row is None:
        _create_gate(connection)
        row = connection.execute(select(gate).where(gate.c.name == GATE_NAME)).one()
    return Gate(
        paused_until=row.paused_until,
        failures=row.failures,
        reason=row.reason,
        batch_limit=row.batch_limit,
        refused_key=row.refused_key,
        spacing=timedelta(milliseconds=row.spacing_ms),
    )


def _create_gate(connection: Connection) -> None:
    values = {"name": GATE_NAME}
    if connection.dialect.name == "postgresql":
        connection.execute(postgresql.insert(gate).values(values).on_conflict_do_nothing())
    else:
        connection.execute(sqlite.insert(gate).values(values).on_conflict_do_nothing())


# -- take_probe -- While the circuit is open, let exactly one worker send: the first to
# move ``paused_until`` past now wins, everyone else sees the circuit still paused.
def take_probe(connection: Connection, *, now: datetime, hold: timedelta) -> bool:
    statement = (
        update(gate)
        .where(
            gate.c.name == GATE_NAME,
            or_(gate.c.paused_until.is_(None), gate.c.paused_until <= now),
        )
        .values(paused_until=now + hold, updated_at=now)
    )
    return connection.execute(statement).rowcount == 1


# -- reserve_send_slot -- After a 429 requests are spaced out: book the next free slot
# for all workers (compare-and-set, retried on a race) and return when this worker may send.
def reserve_send_slot(connection: Connection, *, now: datetime, spacing: timedelta) -> datetime:
    while True:
        booked = connection.scalar(select(gate.c.next_send_at).where(gate.c.name == GATE_NAME))
        slot = max(booked, now) if booked is not None else now
        statement = (
            update(gate)
            .where(gate.c.name == GATE_NAME, gate.c.next_send_at.is_not_distinct_from(booked))
            .values(next_send_at=slot + spacing)
        )
        if connection.execute(statement).rowcount == 1:
            return slot


# -- note_failure -- A request-level failure: count it (a 429 is not counted towards the
# circuit) and pause every worker until ``paused_until`` (never before a pause already set).
def note_failure(
    connection: Connection,
    *,
    now: datetime,
    paused_until: datetime,
    reason: str,
    refused_key: str | None = None,
    spacing: timedelta | None = None,
    counts: bool = True,
) -> None:
    later = func.max if connection.dialect.name == "sqlite" else func.greatest
    values: dict[str, Any] = {
        "failures": gate.c.failures + (1 if counts else 0),
        "paused_until": later(func.coalesce(gate.c.paused_until, paused_until), paused_until),
        "reason": reason,
        "updated_at": now,
    }
    if refused_key is not None:
        values["refused_key"] = refused_key
    if spacing is not None:
        values["spacing_ms"] = int(spacing.total_seconds() * 1000)
    connection.execute(update(gate).where(gate.c.name == GATE_NAME).values(values))


# -- note_success -- The API answered: close the circuit, forget a refused key, and
# loosen the spacing kept after a 429.
def note_success(connection: Connection, *, now: datetime, spacing: timedelta) -> None:
    statement = (
        update(gate)
        .where(gate.c.name == GATE_NAME)
        .values(
            failures=0,
            paused_until=None,
            reason=None,
            refused_key=None,
            spacing_ms=int(spacing.total_seconds() * 1000),
            updated_at=now,
        )
    )
    connection.execute(statement)


# -- limit_batch_size -- The API said a batch was too large: no batch above ``size``.
def limit_batch_size(connection: Connection, *, size: int, now: datetime) -> None:
    current = func.coalesce(gate.c.batch_limit, size + 1)
    smaller = func.min if connection.dialect.name == "sqlite" else func.least
    statement = (
        update(gate)
        .where(gate.c.name == GATE_NAME)
        .values(batch_limit=smaller(current, size), updated_at=now)
    )
    connection.execute(statement)


# -- reset_gate -- An operator's resume: clear every pause and limit.
def reset_gate(connection: Connection, *, now: datetime) -> None:
    _create_gate(connection)
    statement = (
        update(gate)
        .where(gate.c.name == GATE_NAME)
        .values(
            paused_until=None,
            failures=0,
            reason=None,
            batch_limit=None,
            refused_key=None,
            spacing_ms=0,
            next_send_at=None,
            updated_at=now,
        )
    )
    connection.execute(statement)


__all__ = [
    "ClaimedRow",
    "Gate",
    "RowResult",
    "claim",
    "count_due",
    "limit_batch_size",
    "note_failure",
    "note_success",
    "read_gate",
    "record",
    "reserve_send_slot",
    "reset_gate",
    "take_probe",
]


# ------------------------------------------------------------------------------------------
# Operations: what the `outbox` CLI, the metrics endpoint and the demo read and change.
# Every statement serves PostgreSQL and SQLite alike.


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


__all__ += [
    "QueueFigures",
    "Selection",
    "accepted_tracking_ids",
    "cancel_pending",
    "content_type_counts",
    "count_finished",
    "count_selected",
    "failure_reasons",
    "find_message",
    "prune_finished",
    "queue_figures",
    "retry_failed",
    "status_counts",
    "total_attempts",
    "unknown_ids",
]
