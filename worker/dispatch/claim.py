"""The claim: take a batch of due rows under a lease, in one statement, and count them due.

Statements take a Connection and an explicit ``now`` so that tests move time instead of
sleeping. PostgreSQL gets ``FOR UPDATE SKIP LOCKED``; SQLite (one worker) gets the same
statements without row locks, its writes being serialized by the database lock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Text,
    and_,
    bindparam,
    func,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy import (
    cast as cast_,
)

from models import Priority, Status
from models.outbox import outbox_messages as outbox


@dataclass(frozen=True)
class ClaimedRow:
    """A row a worker holds under lease; ``attempts`` already counts this claim."""

    id: int
    client_message_id: str
    recipient: str
    content: Any
    attempts: int
    created_at: datetime


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


# -- claim -- Take up to ``limit`` due rows in one statement: mark them sending under a lease
# and count the attempt. Urgent rows come first, then rows whose lease ended (a dead worker's),
# then normal and bulk rows, each lane oldest due first. Every source is read through a partial
# index (each lane is one range of ix_outbox_messages_due) and locked with SKIP LOCKED, so
# concurrent workers never wait for each other nor take the same row; a source is read only
# as far as the batch still needs rows.
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
    lanes = {
        priority: (
            select(outbox.c.id)
            .where(
                outbox.c.status == Status.PENDING,
                outbox.c.priority == int(priority),
                outbox.c.next_attempt_at <= now,
            )
            .order_by(outbox.c.next_attempt_at, outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .cte(f"lane_{priority.name.lower()}")
        )
        for priority in Priority
    }
    sources = [lanes[Priority.URGENT], expired, lanes[Priority.NORMAL], lanes[Priority.BULK]]
    chosen = union_all(*(select(source.c.id) for source in sources)).limit(limit).subquery()
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


# -- count_due -- How many rows are due now, counting no further than ``cap`` (cheap on
# a large backlog: the partial indexes stop the scan at the cap).
def count_due(connection: Connection, *, now: datetime, cap: int) -> int:
    due = select(literal(1)).where(_due(now)).limit(cap).subquery()
    return int(connection.scalar(select(func.count()).select_from(due)) or 0)
