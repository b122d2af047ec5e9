"""The receiver's SQL: store a request's reports in one statement and move delivery statuses.

Rules, the same in every statement here and in the migration's trigger:

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
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.exc import OperationalError

from models import FINAL_DELIVERY_STATUSES
from models.types import UtcDateTime
from worker.reports.parsing import Report

log = logging.getLogger(__name__)

# The same key as the trigger function of migrations 0006 and 0007 (a test checks that they
# agree).
MATCH_LOCK = 122550254464888
RETRIES = 3  # a deadlock between two requests about the same messages is retried
RETRYABLE_STATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
FINAL = ", ".join(f"'{status}'" for status in sorted(FINAL_DELIVERY_STATUSES))
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores UTC times in SQLite

# Seconds from accepted to DELIVERED of a message just updated (NULL for other statuses).
DELIVERED_SECONDS = """CASE WHEN m.delivery_status = 'DELIVERED' AND m.accepted_at IS NOT NULL
    THEN greatest(0, extract(epoch FROM m.delivery_status_at - m.accepted_at))::float8 END"""
SQLITE_DELIVERED_SECONDS = """CASE WHEN delivery_status = 'DELIVERED' AND accepted_at IS NOT NULL
    THEN max(0.0, (julianday(delivery_status_at) - julianday(accepted_at)) * 86400.0) END"""

# -- apply -- From the reports just stored (or just matched), the best per message, written
# to its message when it beats the status shown there. Returns, aggregated, what was stored
# (by status: how many, how many matched, the ids of the others) and what was updated.
APPLY_POSTGRES = f"""
, best AS (
    SELECT DISTINCT ON (message_id) message_id, status, event_at,
           status IN ({FINAL}) AS final
    FROM stored WHERE message_id IS NOT NULL
    ORDER BY message_id, final DESC, event_at DESC, id
), applied AS (
    UPDATE outbox_messages AS m
    SET delivery_status = b.status, delivery_status_at = b.event_at
    FROM best AS b
    WHERE m.id = b.message_id
      AND (m.delivery_status IS NULL
           OR (b.final, b.event_at)
              > (m.delivery_status IN ({FINAL}), m.delivery_status_at))
    RETURNING m.delivery_status, {DELIVERED_SECONDS} AS seconds
)
SELECT 'stored' AS kind, status, count(*) AS reports, count(message_id) AS matched,
       array_agg(id) FILTER (WHERE message_id IS NULL) AS unmatched_ids,
       NULL::float8[] AS delivered_seconds
FROM stored GROUP BY status
UNION ALL
SELECT 'applied', NULL, count(*), NULL, NULL,
       array_agg(seconds) FILTER (WHERE seconds IS NOT NULL)
FROM applied"""

# -- store_postgres -- Insert every report of a request in one statement, matched to its
# message where one holds that tracking id, and apply the statuses (see apply).
STORE_POSTGRES = f"""
WITH stored AS (
    INSERT INTO outbox_delivery_reports
        (tracking_id, status, done_at, received_at, report, message_id)
    SELECT v.tracking_id, v.status, v.done_at, :received_at, v.report, m.id
    FROM jsonb_to_recordset(CAST(:reports AS jsonb)) AS v(
        position integer, tracking_id text, status text, done_at timestamptz, report text)
    LEFT JOIN outbox_messages AS m ON m.tracking_id = v.tracking_id
    ORDER BY v.position
    ON CONFLICT DO NOTHING
    RETURNING id, status, message_id, coalesce(done_at, received_at) AS event_at
){APPLY_POSTGRES}"""

# -- rematch_postgres -- Under the exclusive match lock: the reports of the request's tracking
# ids still unmatched (stored now, or repeated) that now find their message, matched and
# applied.
REMATCH_POSTGRES = f"""
WITH stored AS (
    UPDATE outbox_delivery_reports AS r SET message_id = m.id
    FROM outbox_messages AS m
    WHERE r.tracking_id = ANY(CAST(:tracking_ids AS text[])) AND r.message_id IS NULL
      AND m.tracking_id = r.tracking_id
    RETURNING r.id, r.status, r.message_id, coalesce(r.done_at, r.received_at) AS event_at
){APPLY_POSTGRES}"""
TAKE_MATCH_LOCK = "SELECT pg_advisory_xact_lock(:lock)"

# -- store_sqlite -- The same insert from json_each (the WHERE settles SQLite's parse of
# ON CONFLICT after a join); returns the stored reports.
STORE_SQLITE = """
INSERT INTO outbox_delivery_reports (tracking_id, status, done_at, received_at, report, message_id)
SELECT v.value ->> 'tracking_id', v.value ->> 'status', v.value ->> 'done_at', :received_at,
       v.value ->> 'report', m.id
FROM json_each(:reports) AS v
LEFT JOIN outbox_messages AS m ON m.tracking_id = v.value ->> 'tracking_id'
WHERE true
ORDER BY v.key
ON CONFLICT DO NOTHING
RETURNING id, status, message_id"""

# -- apply_sqlite -- The apply step over the reports stored by the statement before.
APPLY_SQLITE = f"""
WITH best AS (
    SELECT message_id, status, event_at, final FROM (
        SELECT message_id, status, coalesce(done_at, received_at) AS event_at,
               status IN ({FINAL}) AS final,
               row_number() OVER (
                   PARTITION BY message_id
                   ORDER BY status IN ({FINAL}) DESC,
                            coalesce(done_at, received_at) DESC, id) AS place
        FROM outbox_delivery_reports
        WHERE id IN (SELECT value FROM json_each(:ids)) AND message_id IS NOT NULL)
    WHERE place = 1)
UPDATE outbox_messages AS m
SET delivery_status = best.status, delivery_status_at = best.event_at
FROM best
WHERE m.id = best.message_id
  AND (m.delivery_status IS NULL
       OR (best.final, best.event_at) > (m.delivery_status IN ({FINAL}),
                                         m.delivery_status_at))
RETURNING delivery_status AS status, {SQLITE_DELIVERED_SECONDS} AS seconds"""


@dataclass
class Stored:
    """What storing one request's reports did."""

    stored: Counter[str] = field(default_factory=Counter)  # new reports, by status
    duplicates: int = 0  # reports already stored: repeats, changed nothing
    matched: int = 0  # new reports that found their message
    unmatched: int = 0  # new reports whose tracking id no message holds (yet)
    updated: int = 0  # messages whose delivery status moved
    delivered_seconds: list[float] = field(default_factory=list)  # accepted -> DELIVERED

    def note_stored(self, rows: Sequence[Any]) -> list[int]:
        """Count stored rows (id, status, message_id) one by one; returns the unmatched ids."""
        unmatched = []
        for row in rows:
            self.stored[row.status] += 1
            if row.message_id is None:
                unmatched.append(row.id)
        self.matched += len(rows) - len(unmatched)
        self.unmatched += len(unmatched)
        return unmatched

    def note_applied(self, rows: Sequence[Any]) -> None:
        """Count updated messages (status, seconds from accepted to DELIVERED or NULL)."""
        self.updated += len(rows)
        self.delivered_seconds += [row.seconds for row in rows if row.seconds is not None]

    def note_summary(self, rows: Sequence[Any]) -> list[int]:
        """Count PostgreSQL's aggregated rows (see apply); returns the unmatched ids."""
        unmatched: list[int] = []
        for row in rows:
            if row.kind == "applied":
                self.updated += row.reports
                self.delivered_seconds += row.delivered_seconds or []
            else:
                self.stored[row.status] += row.reports
                self.matched += row.matched
                self.unmatched += row.reports - row.matched
                unmatched += row.unmatched_ids or []
        return unmatched


def store_reports(engine: Engine, reports: Sequence[Report], *, received_at: datetime) -> Stored:
    """Store a request's reports and move the statuses they change; committed on return."""
    for attempt in range(1, RETRIES + 1):
        try:
            if engine.dialect.name == "sqlite":
                return _store_sqlite(engine, reports, received_at)
            return _store_postgres(engine, reports, received_at)
        except OperationalError as error:
            state = getattr(error.orig, "sqlstate", None)
            if state not in RETRYABLE_STATES or attempt == RETRIES:
                raise
            log.info("storing reports met %s (attempt %d): retrying", state, attempt)
    raise AssertionError("unreachable")


def _store_postgres(engine: Engine, reports: Sequence[Report], received_at: datetime) -> Stored:
    result = Stored()
    with engine.begin() as connection:
        unmatched = _stored_and_applied(
            connection,
            text(STORE_POSTGRES).bindparams(bindparam("received_at", type_=UtcDateTime())),
            {"reports": _payload(reports, sqlite=False), "received_at": received_at},
            result,
        )
        result.duplicates = len(reports) - sum(result.stored.values())
        if unmatched or result.duplicates:
            _rematch(connection, reports, result, new_unmatched=bool(unmatched))
    return result


def _rematch(
    connection: Connection, reports: Sequence[Report], result: Stored, *, new_unmatched: bool
) -> None:
    """Match the request's still-unmatched reports whose message exists by now; the match
    lock is taken when this request stored unmatched ones (a record may be in flight)."""
    if new_unmatched:
        connection.execute(text(TAKE_MATCH_LOCK), {"lock": MATCH_LOCK})
    tracking_ids = sorted({report.tracking_id for report in reports})
    matched = Stored()
    _stored_and_applied(connection, text(REMATCH_POSTGRES), {"tracking_ids": tracking_ids}, matched)
    moved = sum(matched.stored.values())
    result.matched += moved
    result.unmatched -= min(moved, result.unmatched)
    result.updated += matched.updated
    result.delivered_seconds += matched.delivered_seconds


def _stored_and_applied(
    connection: Connection, statement: Any, parameters: dict[str, Any], result: Stored
) -> list[int]:
    """Run a store or rematch statement; counts into ``result``, returns the unmatched ids."""
    return result.note_summary(connection.execute(statement, parameters).all())


def _store_sqlite(engine: Engine, reports: Sequence[Report], received_at: datetime) -> Stored:
    result = Stored()
    store = text(STORE_SQLITE).bindparams(bindparam("received_at", type_=UtcDateTime()))
    apply = text(APPLY_SQLITE)
    with engine.begin() as connection:
        payload = _payload(reports, sqlite=True)
        rows = connection.execute(store, {"reports": payload, "received_at": received_at}).all()
        result.note_stored(rows)
        ids = orjson.dumps([row.id for row in rows if row.message_id is not None]).decode()
        result.note_applied(connection.execute(apply, {"ids": ids}).all())
    result.duplicates = len(reports) - sum(result.stored.values())
    return result


def _payload(reports: Sequence[Report], *, sqlite: bool) -> str:
    """The reports as one JSON parameter, in key order so that concurrent requests lock alike."""
    ordered = sorted(reports, key=_key)
    return orjson.dumps(
        [
            {
                "position": position,
                "tracking_id": report.tracking_id,
                "status": report.status,
                "done_at": _time(report.done_at, sqlite),
                "report": report.raw,
            }
            for position, report in enumerate(ordered)
        ]
    ).decode()


def _key(report: Report) -> tuple[str, str, datetime]:
    return report.tracking_id, report.status, report.done_at or datetime.min.replace(tzinfo=UTC)


def _time(moment: datetime | None, sqlite: bool) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime(SQLITE_TIME) if sqlite else moment.isoformat()
