"""The sending gate: one row of sending state shared by every worker, its SQL and its read-out.

Every worker reads the gate before a batch, so a pause decided by one (an open circuit, a 429's
Retry-After, a 401) holds for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, Connection, Integer, Table, Text, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from models.outbox import Base
from models.types import UtcDateTime

GATE_NAME = "wiraya"

# Every worker process reads this row before a batch, so a pause decided by one
# (an open circuit, a 429's Retry-After, a 401) holds for all of them.
dispatch_gate = Table(
    "outbox_dispatch_gate",
    Base.metadata,
    Column("name", Text, primary_key=True),
    # No batch may be sent before this time (Retry-After floor, circuit cool-down).
    Column("paused_until", UtcDateTime),
    # Request-level failures in a row; at the threshold the circuit is open.
    Column("failures", Integer, nullable=False, server_default=text("0")),
    # Why sending is paused, for the CLI, metrics and logs.
    Column("reason", Text),
    # The largest batch the API accepted after a too-large answer (null: the configured size).
    Column("batch_limit", Integer),
    # SHA-256 prefix of an API key the API refused (401/403): that key sends no more.
    Column("refused_key", Text),
    # Minimum spacing between requests after a 429, in milliseconds (0: no spacing).
    Column("spacing_ms", Integer, nullable=False, server_default=text("0")),
    Column("next_send_at", UtcDateTime),
    Column("updated_at", UtcDateTime),
)

gate = dispatch_gate


@dataclass(frozen=True)
class Gate:
    """The shared sending state every worker reads before a batch."""

    paused_until: datetime | None
    failures: int
    reason: str | None
    batch_limit: int | None
    refused_key: str | None
    spacing: timedelta


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


# -- the operators' read-out ---------------------------------------------------------------


@dataclass(frozen=True)
class GateState:
    """The shared sending state, as operators read it."""

    paused: bool  # no worker sends before paused_until
    paused_until: datetime | None
    failures: int  # request-level failures in a row
    circuit_open: bool  # failures reached OUTBOX_CIRCUIT_FAILURES: one probe at a time
    refused_key: bool  # the API refused a key (401/403); that key sends no more
    reason: str | None
    spacing_seconds: float  # requests spaced out after a 429
    batch_limit: int | None  # smaller batches after a too-large answer

    @classmethod
    def of(cls, gate: Gate, *, now: datetime, circuit_failures: int) -> GateState:
        paused = gate.paused_until is not None and gate.paused_until > now
        return cls(
            paused=paused,
            paused_until=gate.paused_until if paused else None,
            failures=gate.failures,
            circuit_open=gate.failures >= circuit_failures,
            refused_key=gate.refused_key is not None,
            reason=gate.reason,
            spacing_seconds=gate.spacing.total_seconds(),
            batch_limit=gate.batch_limit,
        )

    def describe(self) -> str:
        """One line: 'sending', or why not and until when."""
        if self.refused_key:
            state = "STOPPED: the API refused the key (fix WIRAYA_API_KEY; workers resume)"
        elif self.paused and self.paused_until is not None:
            state = f"PAUSED until {self.paused_until:%Y-%m-%d %H:%M:%S} UTC"
        elif self.circuit_open:
            state = "circuit OPEN: probing with one message at a time"
        else:
            state = "running"
        extras = []
        if self.failures:
            extras.append(f"{self.failures} failed requests in a row")
        if self.spacing_seconds:
            extras.append(f"requests spaced {self.spacing_seconds:.2f}s apart after a 429")
        if self.batch_limit:
            extras.append(f"batches limited to {self.batch_limit}")
        if self.reason and (self.paused or self.refused_key or self.failures):
            extras.append(f"last: {self.reason}")
        return state + (f" ({'; '.join(extras)})" if extras else "")
