"""A drain beside operator commands: threads that claim and record batches with the real SQL.

Each thread claims a batch with the dispatcher's own claim statement (FOR UPDATE SKIP LOCKED on
PostgreSQL) and records every row's outcome with the guarded record statement, as a worker does,
without the HTTP call in between: what is left is the database traffic operators meet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from models import Status
from worker.dispatch import claim as claims
from worker.dispatch import gate as gates
from worker.dispatch import record as records
from worker.dispatch.claim import ClaimedRow
from worker.dispatch.record import RowResult

LEASE = timedelta(seconds=120)


def accept(row: ClaimedRow, now: datetime) -> RowResult:
    """Every claimed row accepted, as a healthy API answers."""
    return RowResult(
        id=row.id,
        status=Status.ACCEPTED,
        attempts=row.attempts,
        tracking_id=f"{row.id:032x}",
    )


def mixed(row: ClaimedRow, now: datetime) -> RowResult:
    """Mostly accepted; every seventh row back to pending for a retry, every eleventh failed."""
    if row.id % 11 == 0:
        return RowResult(
            id=row.id,
            status=Status.FAILED,
            attempts=row.attempts,
            last_error="rejected: recipient is blocked",
        )
    if row.id % 7 == 0 and row.attempts < 3:
        return RowResult(
            id=row.id,
            status=Status.PENDING,
            attempts=row.attempts,
            next_attempt_at=now,
            last_error="transient: busy",
        )
    return accept(row, now)


@dataclass
class Drain:
    """What the drain threads did; ``errors`` holds anything a thread raised."""

    claimed: int = 0
    recorded: int = 0
    batches: int = 0
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, claimed: int, recorded: int) -> None:
        with self.lock:
            self.claimed += claimed
            self.recorded += recorded
            self.batches += 1 if claimed else 0


@contextmanager
def draining(
    engine: Engine,
    *,
    threads: int = 2,
    batch: int = 100,
    outcome: Callable[[ClaimedRow, datetime], RowResult] = accept,
) -> Iterator[Drain]:
    """Claim and record in ``threads`` threads until the block ends (then wait for them)."""
    drain = Drain()
    stop = threading.Event()
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def work() -> None:
        try:
            while not stop.is_set():
                now, token = datetime.now(UTC), claims.new_token()
                with autocommit.connect() as connection:
                    version = gates.read_gate(connection).version
                    rows = claims.claim(
                        connection, limit=batch, lease=LEASE, now=now, version=version, token=token
                    )
                with engine.begin() as connection:
                    written = records.record(
                        connection, [outcome(row, now) for row in rows], token=token, now=now
                    )
                drain.add(len(rows), len(written))
                if not rows:
                    stop.wait(0.005)
        except BaseException as error:
            drain.errors.append(error)

    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for thread in workers:
        thread.start()
    try:
        yield drain
    finally:
        stop.set()
        for thread in workers:
            thread.join(timeout=30)
    assert not drain.errors, drain.errors
