"""Storing a request's delivery reports and moving delivery statuses, in one transaction.

The statements are each database's (``Database.store_reports`` and ``rematch_reports`` in
``models.databases``); the rules are the same in every one and in the migration's trigger:

- A report is stored once (its tracking id, status and doneAt are unique; ``ON CONFLICT DO
  NOTHING``), so a repeat changes nothing.
- A message's ``delivery_status`` is its best report: a final report (a status Wiraya
  documents as final) beats the others (NEXTATTEMPT, or a status it never named), then the
  later event (doneAt, else the time received) wins, then the report stored first.
  Updates are compare-and-set against the row as it is, so concurrent requests cannot undo
  each other.
- A report whose message has no such tracking id yet is stored unmatched. The trigger on
  ``outbox_messages`` matches it when the worker records that tracking id. On PostgreSQL a
  record in flight can miss a report committed just after it read, while the request missed
  the record's uncommitted tracking id: so a request that stored unmatched reports matches
  them again, in the same transaction, under an exclusive advisory lock, which every record
  statement's trigger holds shared until it commits. Whichever commits first, the other sees
  it. Store and match commit together: a request that fails between them stores nothing, and
  Wiraya's resend finds no repeat to skip. A resend that repeats reports still unmatched
  matches them too. (SQLite has one writer at a time: a request and a record never
  interleave.)
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from models.databases import ReportRow, ReportsWritten, database_of
from worker.reports.parsing import Report

log = logging.getLogger(__name__)

RETRIES = 3  # a deadlock between two requests about the same messages is retried
RETRYABLE_STATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure


@dataclass
class Stored:
    """What storing one request's reports did."""

    stored: Counter[str] = field(default_factory=Counter)  # new reports, by status
    duplicates: int = 0  # reports already stored: repeats, changed nothing
    matched: int = 0  # new reports that found their message
    unmatched: int = 0  # new reports whose tracking id no message holds (yet)
    updated: int = 0  # messages whose delivery status moved
    delivered_seconds: list[float] = field(default_factory=list)  # accepted -> DELIVERED

    def note_stored(self, written: ReportsWritten) -> None:
        """Count what the store statement wrote."""
        self.stored += written.stored
        self.matched += written.matched
        self.unmatched += len(written.unmatched_ids)
        self.note_applied(written)

    def note_rematched(self, written: ReportsWritten) -> None:
        """Count the reports stored unmatched that found their message since."""
        moved = sum(written.stored.values())
        self.matched += moved
        self.unmatched -= min(moved, self.unmatched)
        self.note_applied(written)

    def note_applied(self, written: ReportsWritten) -> None:
        """Count the messages whose delivery status moved."""
        self.updated += written.updated
        self.delivered_seconds += written.delivered_seconds


def store_reports(engine: Engine, reports: Sequence[Report], *, received_at: datetime) -> Stored:
    """Store a request's reports and move the statuses they change; committed on return."""
    for attempt in range(1, RETRIES + 1):
        try:
            return _store(engine, reports, received_at)
        except OperationalError as error:
            state = getattr(error.orig, "sqlstate", None)
            if state not in RETRYABLE_STATES or attempt == RETRIES:
                raise
            log.info("storing reports met %s (attempt %d): retrying", state, attempt)
    raise AssertionError("unreachable")


def _store(engine: Engine, reports: Sequence[Report], received_at: datetime) -> Stored:
    """Store and match in one transaction; the still-unmatched reports of the request are
    matched again when it stored unmatched ones or repeated some (see the module's rules)."""
    database = database_of(engine)
    result = Stored()
    rows = [
        ReportRow(report.tracking_id, report.status, report.done_at, report.raw)
        for report in sorted(reports, key=_key)  # so that concurrent requests lock alike
    ]
    with engine.begin() as connection:
        written = database.store_reports(connection, rows, received_at)
        result.note_stored(written)
        result.duplicates = len(reports) - sum(result.stored.values())
        if written.unmatched_ids or result.duplicates:
            tracking_ids = sorted({report.tracking_id for report in reports})
            lock = bool(written.unmatched_ids)  # a record may be in flight
            result.note_rematched(database.rematch_reports(connection, tracking_ids, lock=lock))
    return result


def _key(report: Report) -> tuple[str, str, datetime]:
    return report.tracking_id, report.status, report.done_at or datetime.min.replace(tzinfo=UTC)
