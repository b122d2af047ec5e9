"""What operators read: one consistent snapshot for `outbox stats` and the metrics, and one message.

Everything a snapshot holds is read in one transaction that sees one moment of the database:
REPEATABLE READ on PostgreSQL, one read transaction on SQLite (pysqlite would otherwise run
each SELECT on its own). A snapshot taken while workers drain therefore never contradicts
itself: its statuses add up, its leases add up to its sending rows, its lanes to its pending.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from models.databases import database_of
from worker.dispatch import gate as gates
from worker.dispatch.gate import GateState, KeyState
from worker.errors import OperatorError
from worker.ops import queries
from worker.ops.queries import EXACT_BELOW, Lane, QueueFigures

TOP_REASONS = 5
REASONS_AMONG = 1_000  # top failure reasons are those of the latest failures only


@dataclass(frozen=True)
class Snapshot:
    """Everything `outbox stats` and the metrics endpoint show, read at ``taken_at``."""

    taken_at: datetime
    figures: QueueFigures
    gate: GateState
    failure_reasons: list[tuple[str, int]]
    keys: list[KeyState] = field(default_factory=list)  # tenants' own keys' brakes

    @property
    def keys_held(self) -> list[KeyState]:
        """The tenants' keys a brake of their own holds back: paused, or rate limited."""
        return [key for key in self.keys if key.in_force]

    @property
    def oldest_due_age(self) -> timedelta | None:
        """How long the longest-waiting due message has waited since it was due (None: none)."""
        return self._age(self.figures.oldest_due_at)

    def due_age(self, lane: Lane) -> timedelta | None:
        """The same for one lane."""
        return self._age(lane.oldest_due_at)

    def _age(self, since: datetime | None) -> timedelta | None:
        return None if since is None else max(timedelta(0), self.taken_at - since)

    def to_json(self) -> dict[str, Any]:
        """The snapshot as `outbox stats --json` prints it."""
        figures = self.figures
        gate = asdict(self.gate)
        gate["paused_until"] = _iso(self.gate.paused_until)
        gate["next_probe_at"] = _iso(self.gate.next_probe_at)
        gate["refused_key"] = self.gate.refused_key
        gate["spacing_seconds"] = self.gate.spacing_seconds
        gate["state"] = self.gate.describe()
        return {
            "taken_at": _iso(self.taken_at),
            "by_status": figures.by_status,
            "estimated": sorted(figures.estimated),
            "oldest_due_age_seconds": _seconds(self.oldest_due_age),
            "due_now": figures.due_now,
            "retrying": figures.retrying,
            "leases_in_flight": figures.leases_in_flight,
            "expired_leases": figures.expired_leases,
            "lanes": {
                name: {
                    "pending": lane.pending,
                    "due": lane.due,
                    "scheduled": lane.scheduled,
                    "expired_leases": lane.expired_leases,
                    "oldest_due_age_seconds": _seconds(self.due_age(lane)),
                    "next_due_at": _iso(lane.next_due_at),
                }
                for name, lane in figures.lanes.items()
            },
            "gate": gate,
            "tenant_keys": [key.to_json() for key in self.keys_held],
            "top_failure_reasons": [
                {"reason": reason, "count": count} for reason, count in self.failure_reasons
            ],
            "failure_reasons_among_latest": REASONS_AMONG,
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _seconds(age: timedelta | None) -> float | None:
    return None if age is None else age.total_seconds()


@contextmanager
def one_reading(engine: Engine) -> Iterator[Connection]:
    """A connection whose statements all see the same moment of the database."""
    with database_of(engine).one_reading(engine) as connection:
        yield connection


def take_snapshot(
    engine: Engine,
    *,
    now: datetime,
    circuit_failures: int,
    reasons: int = TOP_REASONS,
    exact_below: int | None = EXACT_BELOW,
) -> Snapshot:
    """Read the backlog, the gate (and each tenant key's own brakes) and the commonest failure
    reasons as one reading.

    The gate's row is created the first time it is read; should another process create it
    at the same moment, the reading conflicts with that write once, and is taken again.
    """
    try:
        return _read(engine, now, circuit_failures, reasons, exact_below)
    except OperationalError:
        with engine.begin() as connection:
            gates.read_gate(connection)
        return _read(engine, now, circuit_failures, reasons, exact_below)


def _read(
    engine: Engine, now: datetime, circuit_failures: int, reasons: int, exact_below: int | None
) -> Snapshot:
    with one_reading(engine) as connection:
        figures = queries.queue_figures(connection, now=now, exact_below=exact_below)
        gate = gates.read_gate(connection)
        keys = gates.read_keys(connection, now)
        failure_reasons = (
            queries.failure_reasons(connection, limit=reasons, among=REASONS_AMONG)
            if reasons
            else []
        )
    return Snapshot(
        taken_at=now,
        figures=figures,
        gate=GateState.of(gate, now=now, circuit_failures=circuit_failures),
        failure_reasons=failure_reasons,
        keys=keys,
    )


def find_message(engine: Engine, client_message_id: str) -> dict[str, Any]:
    """One message's row; OperatorError when no message has that id."""
    with engine.begin() as connection:
        row = queries.find_message(connection, client_message_id)
    if row is None:
        raise OperatorError(f"no message with client_message_id {client_message_id!r}")
    return row
