"""Making the record land: retried while the lease holds the rows, and no claim while it cannot.

The API has answered; only the record stands between those answers and the rows. Should its
statement fail (a dropped connection, a failover, a lock timeout, a missing privilege, a
trigger's error), the rows stay `sending` under this claim, and after their lease another
claim sends them again. So the record is retried, with a short backoff, for as long as the
lease holds the rows: it is one statement guarded by the claim's token, so running it twice
writes once, and a record that comes too late (another worker claimed the rows when the
lease ended) writes nothing.

If it never lands before the lease nears its end, the worker gives the batch up: its rows come
back when the lease ends and are sent again under the same clientMessageId (at-least-once with
the same id: Wiraya de-duplicates, and answers with the tracking id it gave). The worker says
so once, as an error, and claims nothing more until recording works again: each dispatch
first runs the batch's record again inside a transaction it rolls back (the same statement,
rows, privileges, connection and triggers; nothing is written, so no record outlives the
lease), and the first batch after one goes through is a trial of one message. Once the lease
is over the rows are anybody's, and the worker tries a trial batch of one anyway: a hold that
needs nobody to end it, which risks one message's resend per lease while records still fail.
A record that lands ends the hold.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from models.text import clean
from worker.clock import Clock
from worker.dispatch.record import RowResult, record
from worker.dispatch.summary import BatchState, BatchSummary

log = logging.getLogger("worker.dispatch")

# The wait after the first failed record, doubled after each failure up to RETRY_WAIT_MAX.
FIRST_RETRY_WAIT = timedelta(milliseconds=50)
RETRY_WAIT_MAX = timedelta(seconds=2)
# No record is started later than this before the lease ends.
LEASE_MARGIN = timedelta(seconds=1)


class Recorder:
    """Writes a batch's results under its claim, retrying within the lease; knows when the
    process cannot record, and holds claims back until it can."""

    def __init__(
        self,
        engine: Engine,
        lease: timedelta,
        clock: Clock,
        sleep: Callable[[float], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.lease = lease
        self.clock = clock
        self.sleep = sleep
        self.monotonic = monotonic
        self.failing: str | None = None  # why records fail; claims wait until one lands
        self._unrecorded: _Unrecorded | None = None  # the batch given up
        self.on_trial = False  # recording came back: the next batch is a trial of one
        self._told = False  # the failure was logged; said again only after a record landed

    def write_batch(
        self, summary: BatchSummary, results: Sequence[RowResult], token: int, claimed_at: datetime
    ) -> None:
        """Record a batch claimed at ``claimed_at`` and count what was written in ``summary``
        (a stale worker's results are refused, not counted); an alarm if it never went through."""
        written = self.write(results, token=token, lease_end=claimed_at + self.lease)
        if written is None:
            summary.state, summary.alarm = BatchState.ALARM, f"cannot record: {self.failing}"
        else:
            summary.count([result for result in results if result.id in written])

    def write(
        self, results: Sequence[RowResult], *, token: int, lease_end: datetime
    ) -> set[int] | None:
        """Record ``results`` under ``token``: the ids written, or None when no record could
        be made before the lease neared its end (the rows come back after it)."""
        if not results:
            return set()
        budget = lease_end - LEASE_MARGIN - self.clock()
        deadline = self.monotonic() + budget.total_seconds()
        wait = FIRST_RETRY_WAIT
        while True:
            try:
                with self.engine.connect() as connection:
                    written = record(connection, results, token=token, now=self.clock())
            except DBAPIError as error:
                reason = _describe(error)
                if self.monotonic() + wait.total_seconds() >= deadline:
                    self._gave_up(reason, _Unrecorded(results, token, lease_end))
                    return None
                level = logging.WARNING if wait == FIRST_RETRY_WAIT else logging.DEBUG
                log.log(level, "record failed, retried until the lease nears its end: %s", reason)
                self.sleep(wait.total_seconds())
                wait = min(wait * 2, RETRY_WAIT_MAX)
            else:
                self._landed()
                return written

    def held(self) -> str | None:
        """Why claims are held back now (records fail), or None when the worker may claim."""
        if self.failing is None or self._unrecorded is None:
            return None
        unrecorded, now = self._unrecorded, self.clock()
        if now < unrecorded.lease_end:
            try:
                with self.engine.connect() as connection:
                    _record_rolled_back(connection, unrecorded, now=now)
            except DBAPIError as error:
                self.failing = _describe(error)
                return f"cannot record: {self.failing}"
            log.warning("the record goes through again: claiming a trial batch of one message")
        else:  # its rows are anybody's now: one message at a time tells whether records work
            log.warning("the unrecorded batch's lease is over: claiming a trial batch of one")
        self.failing, self.on_trial, self._unrecorded = None, True, None
        return None

    def claim_limit(self, size: int) -> int:
        """How many rows the next claim may take: one while recording is on trial."""
        return 1 if self.on_trial else size

    def _gave_up(self, reason: str, unrecorded: _Unrecorded) -> None:
        self.failing, self._unrecorded = reason, unrecorded
        if self._told:
            return
        self._told = True
        log.error(
            "cannot record outcomes: %s. This worker claims nothing more until a record "
            "succeeds; the %d messages of the unrecorded batch are sent again after their "
            "lease, under the same clientMessageId (Wiraya de-duplicates).",
            reason,
            len(unrecorded.results),
        )

    def _landed(self) -> None:
        if self._told:
            log.warning("records are written again")
        self.failing, self.on_trial, self._told = None, False, False


@dataclass(frozen=True)
class _Unrecorded:
    """A batch whose record never went through: its results, claim token and lease end."""

    results: Sequence[RowResult]
    token: int
    lease_end: datetime


def _record_rolled_back(connection: Connection, unrecorded: _Unrecorded, *, now: datetime) -> None:
    """The record statement run for real, then undone: does it go through now?"""
    # By hand on an autocommit connection: pysqlite would not begin before a statement that
    # starts with WITH, and the record's does.
    connection.exec_driver_sql("BEGIN")
    try:
        record(connection, unrecorded.results, token=unrecorded.token, now=now)
    finally:
        connection.exec_driver_sql("ROLLBACK")


def _describe(error: DBAPIError) -> str:
    """The driver's error on one line, without the statement and its parameters."""
    return clean(f"{type(error.orig).__name__}: {error.orig}")
