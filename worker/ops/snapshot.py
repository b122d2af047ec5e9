"""What operators read: one snapshot for `outbox stats` and the metrics, and one message."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from worker.dispatch import gate as gates
from worker.dispatch.gate import GateState
from worker.ops import queries
from worker.ops.access import OperatorError
from worker.ops.queries import QueueFigures

TOP_REASONS = 5


@dataclass(frozen=True)
class Snapshot:
    """Everything `outbox stats` and the metrics endpoint show, read at ``taken_at``."""

    taken_at: datetime
    figures: QueueFigures
    gate: GateState
    failure_reasons: list[tuple[str, int]]

    @property
    def oldest_unfinished_age(self) -> timedelta | None:
        """How long the oldest pending or sending message has waited (None: none waits)."""
        oldest = self.figures.oldest_unfinished_at
        return None if oldest is None else max(timedelta(0), self.taken_at - oldest)

    def to_json(self) -> dict[str, Any]:
        """The snapshot as `outbox stats --json` prints it."""
        age = self.oldest_unfinished_age
        gate = asdict(self.gate)
        gate["paused_until"] = _iso(self.gate.paused_until)
        gate["next_probe_at"] = _iso(self.gate.next_probe_at)
        gate["refused_key"] = self.gate.refused_key
        gate["spacing_seconds"] = self.gate.spacing_seconds
        gate["state"] = self.gate.describe()
        return {
            "taken_at": _iso(self.taken_at),
            "by_status": self.figures.by_status,
            "oldest_pending_age_seconds": None if age is None else age.total_seconds(),
            "due_now": self.figures.due_now,
            "retrying": self.figures.retrying,
            "leases_in_flight": self.figures.leases_in_flight,
            "expired_leases": self.figures.expired_leases,
            "gate": gate,
            "top_failure_reasons": [
                {"reason": reason, "count": count} for reason, count in self.failure_reasons
            ],
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def take_snapshot(
    engine: Engine, *, now: datetime, circuit_failures: int, reasons: int = TOP_REASONS
) -> Snapshot:
    """Read the backlog, the gate and the commonest failure reasons in one transaction."""
    with engine.begin() as connection:
        figures = queries.queue_figures(connection, now=now)
        gate = gates.read_gate(connection)
        failure_reasons = queries.failure_reasons(connection, limit=reasons)
    return Snapshot(
        taken_at=now,
        figures=figures,
        gate=GateState.of(gate, now=now, circuit_failures=circuit_failures),
        failure_reasons=failure_reasons,
    )


def find_message(engine: Engine, client_message_id: str) -> dict[str, Any]:
    """One message's row; OperatorError when no message has that id."""
    with engine.begin() as connection:
        row = queries.find_message(connection, client_message_id)
    if row is None:
        raise OperatorError(f"no message with client_message_id {client_message_id!r}")
    return row
