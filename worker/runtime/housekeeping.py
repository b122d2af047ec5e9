"""Beat's housekeeping: the hourly prune, its schedule kept in the database so restarts keep it.

Celery's in-memory schedule starts a full interval out at every start, so a beat restarted
more often than hourly never pruned. Here each job has a row saying when it is next due; beat
reads it at start and takes the job when due with one compare-and-set, so a second beat
(during a deploy) never runs it too. The prune runs in a thread of beat's own, in chunks of one
short transaction each (`worker.ops.changes.prune`): no worker's dispatch process waits for it,
and beat keeps looking for due rows meanwhile.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import Column, Connection, Engine, Table, Text, select, update
from sqlalchemy.exc import SQLAlchemyError

from models import Status
from models.databases import database_of
from models.outbox import Base
from models.types import UtcDateTime
from worker.clock import Clock, utc_now
from worker.dispatch.policy import quotas
from worker.ops import changes
from worker.settings import DatabaseSettings

log = logging.getLogger(__name__)

PRUNE = "prune"
PRUNE_EVERY = timedelta(hours=1)
# A prune taken but not finished this long after (beat stopped mid-way) is due again.
PRUNE_HOLD = timedelta(minutes=15)

housekeeping = Table(
    "outbox_housekeeping",
    Base.metadata,
    Column("job", Text, primary_key=True),
    # Due from this moment on; taking the job moves it PRUNE_HOLD ahead, finishing it a
    # full interval ahead.
    Column("next_run_at", UtcDateTime, nullable=False),
    # When the job last finished (null: never), for whoever reads the table.
    Column("finished_at", UtcDateTime),
)


class Housekeeping:
    """The schedule of beat's jobs in the outbox database, and the prune itself."""

    def __init__(
        self, engine: Engine, settings: DatabaseSettings, *, clock: Clock = utc_now
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock  # the outbox's time (beat's), which the schedule's times are in

    def take_due(self, job: str, *, now: datetime) -> bool:
        """True for the one caller that finds ``job`` due and moves it PRUNE_HOLD ahead."""
        with self.engine.begin() as connection:
            _create_row(connection, job, now)
            statement = (
                update(housekeeping)
                .where(housekeeping.c.job == job, housekeeping.c.next_run_at <= now)
                .values(next_run_at=now + PRUNE_HOLD)
            )
            return connection.execute(statement).rowcount == 1

    def finish(self, job: str, *, now: datetime) -> None:
        """``job`` is done: due again a full interval from now."""
        with self.engine.begin() as connection:
            statement = (
                update(housekeeping)
                .where(housekeeping.c.job == job)
                .values(next_run_at=now + PRUNE_EVERY, finished_at=now)
            )
            connection.execute(statement)

    def next_run(self, job: str) -> datetime | None:
        """When ``job`` is next due (None: never scheduled, so due at once)."""
        with self.engine.connect() as connection:
            query = select(housekeeping.c.next_run_at).where(housekeeping.c.job == job)
            return connection.scalar(query)

    def prune(self, *, now: datetime) -> int:
        """Delete accepted rows older than OUTBOX_RETENTION_SECONDS with their delivery reports,
        unmatched reports older than OUTBOX_UNMATCHED_REPORT_RETENTION_SECONDS, and the daily
        quotas' counters of days before the retention; book the next prune. Returns how many
        messages went."""
        cutoff = now - self.settings.retention
        deleted = changes.prune(self.engine, status=Status.ACCEPTED, cutoff=cutoff)
        window = self.settings.unmatched_report_retention
        unmatched = changes.prune_unmatched_reports(self.engine, cutoff=now - window)
        if unmatched:
            log.info("pruned %d unmatched delivery reports older than %s", unmatched, window)
        with self.engine.begin() as connection:  # a row per tenant with a quota and day: few
            quotas.prune_counters(connection, before=cutoff.date())
        self.finish(PRUNE, now=self.clock())
        return deleted


def _create_row(connection: Connection, job: str, now: datetime) -> None:
    """A job never run is due now."""
    values = {"job": job, "next_run_at": now}
    insert = database_of(connection).insert(housekeeping)
    connection.execute(insert.values(values).on_conflict_do_nothing())


class PruneSchedule:
    """What beat calls between its looks for due rows: starts the prune in a thread when due.

    The database is asked only when the prune may be due (at start, then when the booked
    time comes), not on every look.
    """

    def __init__(self, jobs: Housekeeping) -> None:
        self.jobs = jobs
        self.ask_at: datetime | None = None  # None: ask now
        self.thread: threading.Thread | None = None

    def start_if_due(self, now: datetime) -> None:
        """Start the prune if it is due and not already running here."""
        if (self.thread is not None and self.thread.is_alive()) or (
            self.ask_at is not None and now < self.ask_at
        ):
            return
        try:
            if not self.jobs.take_due(PRUNE, now=now):
                self.ask_at = self.jobs.next_run(PRUNE) or now
                log.info("next prune at %s", f"{self.ask_at:%Y-%m-%d %H:%M:%S} UTC")
                return
        except SQLAlchemyError as error:
            log.warning("could not read the prune's schedule (asking again later): %s", error)
            self.ask_at = now + PRUNE_HOLD
            return
        self.ask_at = now + PRUNE_HOLD  # ask again once this run should be over
        self.thread = threading.Thread(target=self._prune, args=(now,), name="prune", daemon=True)
        self.thread.start()

    def _prune(self, now: datetime) -> None:
        try:
            deleted = self.jobs.prune(now=now)
        except SQLAlchemyError as error:
            # Left taken: due again after PRUNE_HOLD, here or in the next beat.
            log.warning("prune failed (tried again in %s): %s", PRUNE_HOLD, error)
            return
        self.ask_at = None  # read the booked time afresh
        retention = self.jobs.settings.retention.total_seconds()
        log.info("pruned %d accepted messages older than %.0f s", deleted, retention)
