"""What operators change: retry, cancel, prune and resume, each counted before it is done."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from models import Status
from worker.dispatch import gate as gates
from worker.ops import queries
from worker.ops.access import OperatorError
from worker.ops.queries import Selection

PRUNE_CHUNK = 5_000


@dataclass(frozen=True)
class Plan:
    """What a retry or cancel would change, shown to the operator before it is done."""

    matched: int
    too_old: int = 0  # of those, created more than OUTBOX_MAX_AGE_SECONDS ago


def check_ids(connection: Connection, selection: Selection, status: Status) -> None:
    """Named ids must exist and hold ``status``; else one line naming the first that does not."""
    ids = selection.client_message_ids
    if not ids:
        return
    unknown = queries.unknown_ids(connection, ids)
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise OperatorError(f"no message with client_message_id {unknown[0]!r}{more}")
    for client_message_id in ids:
        row = queries.find_message(connection, client_message_id)
        if row is not None and row["status"] != status:
            raise OperatorError(
                f"message {client_message_id!r} is {row['status']}, not {status.value}"
            )


def plan_retry(engine: Engine, selection: Selection, *, now: datetime, max_age: timedelta) -> Plan:
    """How many failed messages the selection matches, and how many of them are too old."""
    with engine.begin() as connection:
        check_ids(connection, selection, Status.FAILED)
        matched, too_old = queries.count_selected(
            connection,
            selection,
            status=Status.FAILED,
            time_column="updated_at",
            created_before=now - max_age,
        )
    return Plan(matched, too_old)


def retry(engine: Engine, selection: Selection, *, now: datetime, renew_age: bool) -> int:
    """Failed → pending, due now, with fresh attempts; returns how many rows moved."""
    with engine.begin() as connection:
        return queries.retry_failed(connection, selection, now=now, renew_age=renew_age)


def plan_cancel(engine: Engine, selection: Selection) -> Plan:
    """How many pending messages the selection matches."""
    with engine.begin() as connection:
        check_ids(connection, selection, Status.PENDING)
        matched, _ = queries.count_selected(
            connection, selection, status=Status.PENDING, time_column="created_at"
        )
    return Plan(matched)


def cancel(engine: Engine, selection: Selection, *, now: datetime) -> int:
    """Pending → cancelled; returns how many rows moved."""
    with engine.begin() as connection:
        return queries.cancel_pending(connection, selection, now=now)


def plan_prune(engine: Engine, *, status: Status, cutoff: datetime) -> Plan:
    """How many rows of a final status finished before ``cutoff``."""
    with engine.begin() as connection:
        return Plan(queries.count_finished(connection, status=status, cutoff=cutoff))


def prune(engine: Engine, *, status: Status, cutoff: datetime) -> int:
    """Delete them in chunks, one short transaction each; returns how many went."""
    deleted = 0
    while True:
        with engine.begin() as connection:
            count = queries.prune_finished(
                connection, status=status, cutoff=cutoff, chunk=PRUNE_CHUNK
            )
        deleted += count
        if count < PRUNE_CHUNK:
            return deleted


def resume(engine: Engine, *, now: datetime) -> None:
    """Clear every pause, failure count, refused key, spacing and batch limit."""
    with engine.begin() as connection:
        gates.reset_gate(connection, now=now)
