"""The learnt batch size's transitions: each one statement, named for the guard that keeps it.

The limit a too-large answer imposes never falls below the largest batch the API answered (the
proven size), only a size refused though both its halves were taken brings both down, and the
limit creeps back up only from the value a worker read (`worker.dispatch.gate.batches`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, literal, or_, update

from worker.dispatch.gate.state import gate
from worker.dispatch.gate.transitions import _execute, _later, _sooner, _this_gate


def limit_batch_size_to_proven(connection: Connection, *, size: int, now: datetime) -> None:
    """The API said ``size`` items are too many: no batch above half of it from now on, but never
    below the largest batch the API answered."""
    later, sooner = _later(connection), _sooner(connection)
    proven = func.coalesce(gate.c.batch_proven, 1)
    halved = later(literal(max(1, size // 2)), proven)
    current = func.coalesce(gate.c.batch_limit, size)
    statement = (
        update(gate)
        .where(_this_gate())
        .values(batch_limit=later(sooner(current, halved), proven), updated_at=now)
    )
    connection.execute(statement)


def lower_batch_size_to(connection: Connection, *, size: int, now: datetime) -> bool:
    """The API refused a batch as too large and took both its halves: the size was too large, not a
    message. The limit and the proven size come down to ``size`` (the larger half), only ever down,
    so two workers' notes commute and the lower one stays."""
    sooner = _sooner(connection)
    statement = (
        update(gate)
        .where(
            _this_gate(),
            or_(
                func.coalesce(gate.c.batch_limit, size + 1) > size,
                func.coalesce(gate.c.batch_proven, 0) > size,
            ),
        )
        .values(
            batch_limit=sooner(func.coalesce(gate.c.batch_limit, size), size),
            batch_proven=sooner(func.coalesce(gate.c.batch_proven, size), size),
            updated_at=now,
        )
    )
    return _execute(connection, statement)


def raise_batch_limit_if_unchanged(
    connection: Connection, *, read_limit: int, limit: int | None, now: datetime
) -> bool:
    """The learnt batch limit creeps back up (to ``limit``; None lifts it) from the value this
    worker read: a too-large answer noted meanwhile wins."""
    statement = (
        update(gate)
        .where(_this_gate(), gate.c.batch_limit == read_limit)
        .values(batch_limit=limit, updated_at=now)
    )
    return _execute(connection, statement)


def prove_batch_size(connection: Connection, *, size: int) -> None:
    """The API answered a batch of ``size``: it takes at least that many."""
    statement = (
        update(gate)
        .where(_this_gate(), func.coalesce(gate.c.batch_proven, 0) < size)
        .values(batch_proven=size)
    )
    connection.execute(statement)
