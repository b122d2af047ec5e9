"""What operators change: prune and resume, each counted before it is done, and the plan and
chunked loop every change shares (`outbox retry` is `worker.ops.retry`, `outbox cancel`
`worker.ops.cancel`).

A command first counts what its selection matches (the plan the operator confirms), then
changes those rows in chunks of `writes.CHUNK`, one short transaction each, so it never holds
many locks nor a long transaction beside running workers. Its selection is bounded by the
moment it was counted: rows that arrive or fail again meanwhile are not swept along.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine

from models import Priority, Status
from worker.dispatch import gate as gates
from worker.errors import OperatorError
from worker.ops import queries, retention, writes
from worker.ops.selection import Selection

PRUNE_CHUNK = writes.CHUNK


@dataclass(frozen=True)
class Plan:
    """What a retry or cancel would change, shown to the operator before it is done."""

    selection: Selection  # bounded by the moment it was counted
    matched: int
    too_old: int = 0  # retry: of those, first due more than OUTBOX_MAX_AGE_SECONDS ago
    maybe_sent: int = 0  # cancel: of those, pending rows that may already have reached Wiraya
    by_lane: dict[Priority, int] = field(default_factory=dict)  # cancel: matched, by lane
    sending: int = 0  # cancel: rows of the selection being sent now, which it leaves alone


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


def plan_prune(engine: Engine, *, status: Status, cutoff: datetime) -> int:
    """How many rows of a final status finished before ``cutoff``."""
    with engine.begin() as connection:
        return writes.count_finished(connection, status=status, cutoff=cutoff)


def prune(engine: Engine, *, status: Status, cutoff: datetime) -> int:
    """Delete them and their delivery reports in chunks, oldest first, one short transaction
    each; returns how many messages."""
    return in_chunks(
        engine,
        lambda connection: writes.prune_finished(
            connection, status=status, cutoff=cutoff, chunk=writes.CHUNK
        ),
    )


def prune_unmatched_reports(engine: Engine, *, cutoff: datetime) -> int:
    """Delete reports no message holds received before ``cutoff``, in chunks; returns how many."""
    return in_chunks(
        engine,
        lambda connection: retention.prune_unmatched(connection, cutoff=cutoff, chunk=writes.CHUNK),
    )


def in_chunks(
    engine: Engine,
    chunk: Callable[[Connection], int],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Run ``chunk`` in a transaction of its own until one changes fewer than CHUNK rows.

    A changed row leaves the selection (it is no longer failed, pending or there), so each
    chunk takes the next rows; a row skipped because another command changed it first no
    longer matches either.
    """
    changed = 0
    while True:
        with engine.begin() as connection:
            count = chunk(connection)
        changed += count
        if count < writes.CHUNK:
            return changed
        if progress is not None:
            progress(changed)


def resume(engine: Engine, *, now: datetime) -> None:
    """Clear every pause, failure count, refused key, learnt rate and batch limit, every key's
    (each key's next request slot stays: a configured rate holds across a resume).

    Statements on the gate's rows alone (the gate, the refused keys, the keys' own): they wait
    at most for a record that holds a row for its own short transaction, and hold nothing a
    dispatch waits for.
    """
    with engine.begin() as connection:
        gates.reset_gate(connection, now=now)
