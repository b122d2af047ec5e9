"""The operators' reads: what `outbox stats`, the metrics endpoint and the demo show.

A reading costs what the backlog costs, not what the history does: pending and sending rows
are counted exactly through their partial indexes (by lane); finished rows (accepted, failed,
cancelled), the history that grows without bound, are counted exactly through their partial
indexes while few and otherwise taken from the planner's estimate, which says so
(`QueueFigures.estimated`).
Every statement serves PostgreSQL and SQLite alike; SQLite has no estimates and counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, func, select
from sqlalchemy.dialects import postgresql

from models import Priority, Status
from models.databases import database_of
from models.outbox import outbox_messages as outbox
from worker.ops.selection import retrying
from worker.ops.writes import prune_finished as prune_finished  # the prune tests use it here

# Below this many rows of a final status (by the planner's estimate) they are counted exactly:
# an index-only count of that many entries costs a few milliseconds.
EXACT_BELOW = 20_000


@dataclass(frozen=True)
class Lane:
    """One priority's backlog."""

    pending: int  # pending rows, due or not
    due: int  # claimable now: due pending rows and sending rows whose lease ended
    scheduled: int  # pending, not due yet (scheduled by the producer, or backing off)
    expired_leases: int  # sending, lease ended: its worker died or hung
    oldest_due_at: datetime | None  # since when the longest-waiting due message has been due
    next_due_at: datetime | None  # when the next scheduled message becomes due


NO_LANE = Lane(0, 0, 0, 0, None, None)


@dataclass(frozen=True)
class QueueFigures:
    """The backlog at a glance, as `outbox stats` and the metrics endpoint show it."""

    by_status: dict[str, int]  # every status, zeros included
    estimated: frozenset[str]  # statuses whose count is the planner's estimate
    lanes: dict[str, Lane]  # by priority name: urgent, normal, bulk
    retrying: int  # pending after a failed try by a worker
    leases_in_flight: int  # sending, lease still running: a worker holds them
    expired_leases: int  # sending, lease ended: due again

    @property
    def due_now(self) -> int:
        """Claimable now, over every lane."""
        return sum(lane.due for lane in self.lanes.values())

    @property
    def oldest_due_at(self) -> datetime | None:
        """Since when the longest-waiting due message of any lane has been due."""
        moments = [lane.oldest_due_at for lane in self.lanes.values() if lane.oldest_due_at]
        return min(moments) if moments else None


def lane_name(priority: int) -> str:
    return Priority(priority).name.lower()


def queue_figures(
    connection: Connection, *, now: datetime, exact_below: int | None = EXACT_BELOW
) -> QueueFigures:
    """One pass over pending rows and one over sending rows, each through its partial index and
    grouped by lane, then the finished counts (see finished_counts)."""
    due = pending_is_due(now)
    pending = (
        select(
            outbox.c.priority,
            func.count(),
            func.count().filter(due),
            func.min(outbox.c.next_attempt_at).filter(due),
            func.min(outbox.c.next_attempt_at).filter(~due),
            func.count().filter(retrying()),
        )
        .where(outbox.c.status == Status.PENDING)
        .group_by(outbox.c.priority)
    )
    ended = lease_has_ended(now)
    sending = (
        select(
            outbox.c.priority,
            func.count().filter(~ended),
            func.count().filter(ended),
            func.min(outbox.c.locked_until).filter(ended),
        )
        .where(outbox.c.status == Status.SENDING)
        .group_by(outbox.c.priority)
    )
    leases = {
        lane_name(priority): (int(running), int(expired), oldest)
        for priority, running, expired, oldest in connection.execute(sending)
    }
    lanes = {lane_name(priority): NO_LANE for priority in Priority}
    retrying_rows = 0
    for priority, count, due_count, oldest, upcoming, retried in connection.execute(pending):
        lanes[lane_name(priority)] = Lane(
            pending=int(count),
            due=int(due_count),
            scheduled=int(count) - int(due_count),
            expired_leases=0,
            oldest_due_at=_aware(oldest),
            next_due_at=_aware(upcoming),
        )
        retrying_rows += int(retried)
    for name, (_, expired, oldest) in leases.items():
        lanes[name] = _with_expired_leases(lanes[name], expired, _aware(oldest))
    by_status, estimated = finished_counts(connection, exact_below=exact_below)
    by_status[Status.PENDING.value] = sum(lane.pending for lane in lanes.values())
    by_status[Status.SENDING.value] = sum(
        running + expired for running, expired, _ in leases.values()
    )
    return QueueFigures(
        by_status={status.value: by_status[status.value] for status in Status},
        estimated=estimated,
        lanes=lanes,
        retrying=retrying_rows,
        leases_in_flight=sum(running for running, _, _ in leases.values()),
        expired_leases=sum(expired for _, expired, _ in leases.values()),
    )


def pending_is_due(now: Any) -> ColumnElement[bool]:
    """Among pending rows: due (what `outbox stats` and the autoscaler call due)."""
    due: ColumnElement[bool] = outbox.c.next_attempt_at <= now
    return due


def lease_has_ended(now: Any) -> ColumnElement[bool]:
    """Among sending rows: the lease ended, so the row is due again."""
    ended: ColumnElement[bool] = outbox.c.locked_until <= now
    return ended


# -- due_count -- What `outbox stats` counts as due, as one number: pending rows due and
# sending rows whose lease ended, each through its partial index. KEDA's PostgreSQL scaler
# runs it as due_count_sql() renders it (deploy/kubernetes/base/autoscaling.yaml holds that
# text; a test keeps the two equal).
def due_count(now: Any) -> Select[Any]:
    pending = select(func.count()).where(outbox.c.status == Status.PENDING, pending_is_due(now))
    sending = select(func.count()).where(outbox.c.status == Status.SENDING, lease_has_ended(now))
    return select((pending.scalar_subquery() + sending.scalar_subquery()).label("due"))


def due_count_sql() -> str:
    """due_count on the database's clock, as PostgreSQL text with its values inlined."""
    dialect: Any = postgresql.dialect()  # type: ignore[no-untyped-call]
    compiled = due_count(func.now()).compile(
        dialect=dialect, compile_kwargs={"literal_binds": True}
    )
    return " ".join(str(compiled).split())


def _with_expired_leases(lane: Lane, expired: int, since: datetime | None) -> Lane:
    """A lane's figures with its sending rows whose lease ended: due again since then."""
    moments = [moment for moment in (lane.oldest_due_at, since) if moment is not None]
    return Lane(
        pending=lane.pending,
        due=lane.due + expired,
        scheduled=lane.scheduled,
        expired_leases=expired,
        oldest_due_at=min(moments) if moments else None,
        next_due_at=lane.next_due_at,
    )


def finished_counts(
    connection: Connection, *, exact_below: int | None
) -> tuple[dict[str, int], frozenset[str]]:
    """Each final status counted through its partial index while the planner expects fewer than
    ``exact_below`` rows of it (None: always counted); otherwise the planner's estimate (PostgreSQL
    only), marked as such."""
    counts: dict[str, int] = {}
    estimated: set[str] = set()
    for status in (Status.ACCEPTED, Status.FAILED, Status.CANCELLED):
        estimate = (
            database_of(connection).planner_estimate(connection, status.value)
            if exact_below is not None
            else None
        )
        if estimate is not None and exact_below is not None and estimate >= exact_below:
            counts[status.value] = estimate
            estimated.add(status.value)
        else:
            statement = select(func.count()).where(outbox.c.status == status)
            counts[status.value] = int(connection.scalar(statement) or 0)
    return counts, frozenset(estimated)


def _aware(value: Any) -> datetime | None:
    """An aggregate's timestamp as aware UTC (SQLite returns min() as naive text)."""
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def status_counts(connection: Connection) -> dict[str, int]:
    """How many rows hold each status, every status listed (zeros included). A full GROUP BY: for
    the demo's small outbox, not for a scrape."""
    counts = {status.value: 0 for status in Status}
    statement = select(outbox.c.status, func.count()).group_by(outbox.c.status)
    for status, count in connection.execute(statement):
        counts[status] = int(count)
    return counts


def failure_reasons(
    connection: Connection, *, limit: int, among: int | None = None
) -> list[tuple[str, int]]:
    """The commonest last_error texts among failed rows, most frequent first; with ``among``, among
    the latest ``among`` failures only (read newest first through the failed rows' index, so its
    cost does not grow with the failures kept)."""
    failed = select(outbox.c.last_error).where(outbox.c.status == Status.FAILED)
    if among is not None:
        failed = failed.order_by(outbox.c.updated_at.desc(), outbox.c.id.desc()).limit(among)
    rows = failed.subquery()
    count = func.count().label("count")
    statement = (
        select(func.coalesce(rows.c.last_error, "(no reason recorded)"), count)
        .group_by(rows.c.last_error)
        .order_by(count.desc(), rows.c.last_error)
        .limit(limit)
    )
    return [(str(reason), int(number)) for reason, number in connection.execute(statement)]


def find_message(connection: Connection, client_message_id: str) -> dict[str, Any] | None:
    """One row by client_message_id, every column, or None."""
    statement = select(outbox).where(outbox.c.client_message_id == client_message_id)
    row = connection.execute(statement).one_or_none()
    return None if row is None else dict(row._mapping)


def unknown_ids(connection: Connection, client_message_ids: Sequence[str]) -> list[str]:
    """Which of the given client_message_ids are not in the outbox, in order."""
    statement = select(outbox.c.client_message_id).where(
        outbox.c.client_message_id.in_(client_message_ids)
    )
    known = set(connection.scalars(statement))
    return [value for value in client_message_ids if value not in known]


def content_type_counts(connection: Connection) -> dict[tuple[str, str], int]:
    """Rows by content $type and status (the demo's summary table)."""
    content_type = outbox.c.content["$type"].as_string()
    statement = select(content_type, outbox.c.status, func.count()).group_by(
        content_type, outbox.c.status
    )
    return {
        (str(kind), str(status)): int(count)
        for kind, status, count in connection.execute(statement)
    }


def accepted_tracking_ids(connection: Connection) -> dict[str, str | None]:
    """client_message_id -> tracking_id of every accepted row (the demo checks them against the
    sandbox's ledger)."""
    statement = select(outbox.c.client_message_id, outbox.c.tracking_id).where(
        outbox.c.status == Status.ACCEPTED
    )
    return {str(cid): tracking for cid, tracking in connection.execute(statement)}


def total_attempts(connection: Connection) -> int:
    """Sends to the API over all rows (the sum of attempts)."""
    return int(connection.scalar(select(func.coalesce(func.sum(outbox.c.attempts), 0))) or 0)
