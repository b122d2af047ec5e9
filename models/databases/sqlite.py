"""SQLite: one file, one writer at a time, no roles; the host's clock is the database's."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import (
    URL,
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    LargeBinary,
    Table,
    Text,
    TextClause,
    bindparam,
    cast,
    create_engine,
    event,
    func,
    inspect,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.pool import NullPool

from models.databases.database import Database, ReportRow, ReportsWritten
from models.reports import FINAL_DELIVERY_STATUSES
from models.suppressions import outbox_recipient_pacing
from models.types import UtcDateTime

if TYPE_CHECKING:
    from models.message import NewMessage

# How long a migration waits for another one to finish (PostgreSQL waits as long as the other
# one takes).
LOCK_WAIT_SECONDS = 600
CASEFOLD = "outbox_casefold"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores UTC times in SQLite
_FINAL = ", ".join(f"'{status}'" for status in sorted(FINAL_DELIVERY_STATUSES))

# The same results as PostgreSQL's record, read from one JSON array through json_each (its
# UPDATE ... FROM joins by the primary key; its RETURNING takes no alias).
RECORD = """
WITH v AS (
    SELECT value ->> 'id' AS id, value ->> 'status' AS status, value ->> 'attempts' AS attempts,
           value ->> 'next_attempt_at' AS next_attempt_at,
           value ->> 'suspicion' AS suspicion,
           value ->> 'tracking_id' AS tracking_id, value ->> 'last_error' AS last_error,
           value ->> 'reach_evidence' AS reach_evidence
    FROM json_each(:results))
UPDATE outbox_messages AS m SET
    status = v.status,
    attempts = v.attempts,
    next_attempt_at = coalesce(v.next_attempt_at, m.next_attempt_at),
    locked_until = NULL,
    claim_token = NULL,
    tracking_id = coalesce(v.tracking_id, m.tracking_id),
    last_error = v.last_error,
    reach_evidence = coalesce(m.reach_evidence, v.reach_evidence),
    suspicion = coalesce(v.suspicion, m.suspicion),
    accepted_at = CASE WHEN v.status = 'accepted' THEN :now ELSE m.accepted_at END,
    updated_at = :now
FROM v
WHERE m.id = v.id AND m.status = 'sending' AND m.claim_token = :token
RETURNING id"""

# The reports inserted from json_each (the WHERE settles SQLite's parse of ON CONFLICT after a
# join); returns the stored reports, which APPLY_REPORTS then applies.
STORE_REPORTS = """
INSERT INTO outbox_delivery_reports (tracking_id, status, done_at, received_at, report, message_id)
SELECT v.value ->> 'tracking_id', v.value ->> 'status', v.value ->> 'done_at', :received_at,
       v.value ->> 'report', m.id
FROM json_each(:reports) AS v
LEFT JOIN outbox_messages AS m ON m.tracking_id = v.value ->> 'tracking_id'
WHERE true
ORDER BY v.key
ON CONFLICT DO NOTHING
RETURNING id, status, message_id"""

# Of the matched reports just stored, the best per message, written to its message when it
# beats the status shown there; returns the seconds from accepted to DELIVERED of each message
# just delivered.
APPLY_REPORTS = f"""
WITH best AS (
    SELECT message_id, status, event_at, final FROM (
        SELECT message_id, status, coalesce(done_at, received_at) AS event_at,
               status IN ({_FINAL}) AS final,
               row_number() OVER (
                   PARTITION BY message_id
                   ORDER BY status IN ({_FINAL}) DESC,
                            coalesce(done_at, received_at) DESC, id) AS place
        FROM outbox_delivery_reports
        WHERE id IN (SELECT value FROM json_each(:ids)) AND message_id IS NOT NULL)
    WHERE place = 1)
UPDATE outbox_messages AS m
SET delivery_status = best.status, delivery_status_at = best.event_at
FROM best
WHERE m.id = best.message_id
  AND (m.delivery_status IS NULL
       OR (best.final, best.event_at) > (m.delivery_status IN ({_FINAL}),
                                         m.delivery_status_at))
RETURNING delivery_status AS status,
    CASE WHEN delivery_status = 'DELIVERED' AND accepted_at IS NOT NULL
    THEN max(0.0, (julianday(delivery_status_at) - julianday(accepted_at)) * 86400.0)
    END AS seconds"""

_RECORD = text(RECORD).bindparams(
    bindparam("now", type_=UtcDateTime()), bindparam("token", type_=BigInteger())
)
_STORE = text(STORE_REPORTS).bindparams(bindparam("received_at", type_=UtcDateTime()))
_APPLY = text(APPLY_REPORTS)


def tune(dbapi_connection: Any, _record: Any) -> None:
    """Every new connection: WAL lets readers (the CLI, the demo's progress bar) run beside the
    worker's writes; the busy timeout makes a writer wait for the lock instead of failing at
    once. It comes first: switching to WAL takes the lock too, and a migration may hold it for
    seconds."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class SQLite(Database):
    """Writes are serialized by the database lock: one worker process, no row locks."""

    dialect = "sqlite"
    has_roles = False
    listens_for_inserts = False
    keeps_its_own_clock = False
    has_session_locks = False
    changes_columns_online = False

    def make_engine(self, url: URL, *, pooled: bool, options: dict[str, Any]) -> Engine:
        """No pool (a connection is a file handle), every connection tuned (``tune``)."""
        engine = create_engine(url, poolclass=NullPool, **options)
        event.listen(engine, "connect", tune)
        return engine

    def table_columns(self, connection: Connection, tables: list[str]) -> dict[str, set[str]]:
        """Through SQLAlchemy's inspector: the file's own schema, no catalogue to join."""
        inspector = inspect(connection)
        present = set(inspector.get_table_names())
        return {
            name: {column["name"] for column in inspector.get_columns(name)}
            for name in tables
            if name in present
        }

    def supports_transaction_pooler(self, url: URL) -> bool:
        """Never: a file has no pooler in front of it."""
        return False

    def worker_processes(self, wanted: int) -> int:
        """One: SQLite takes one writer at a time."""
        return 1

    def clock_now(self, connection: Connection) -> datetime:
        """The host's clock: the database has none of its own."""
        return datetime.now(UTC)

    def database_file(self, url: URL) -> Path | None:
        """The URL's path; None for an in-memory database."""
        if url.database in (None, "", ":memory:"):
            return None
        return Path(str(url.database))

    def insert(self, table: Any) -> sqlite.Insert:
        """SQLite's INSERT, for its ON CONFLICT clauses."""
        return sqlite.insert(table)

    def same_message_columns(self, table: Table, message: NewMessage) -> list[Any]:
        """The recipient and the content: SQLite has no roles to hide them from."""
        return [table.c.recipient, table.c.content]

    def begin_before_savepoint(self, connection: Connection) -> None:
        """pysqlite (and aiosqlite) in their default mode send BEGIN only before INSERT, UPDATE
        and DELETE. A transaction whose first statement is a SAVEPOINT is then opened by that
        SAVEPOINT, and its RELEASE commits for good, whatever the caller does next. SQLAlchemy's
        documented remedy is to send BEGIN oneself."""
        driver = connection.connection.driver_connection
        if not getattr(driver, "in_transaction", True):
            connection.exec_driver_sql("BEGIN")

    def in_autocommit(self, connection: Connection) -> bool:
        """The driver's isolation_level None (its autocommit mode) outside a transaction."""
        driver = connection.connection.driver_connection
        return getattr(driver, "isolation_level", "") is None and not getattr(
            driver, "in_transaction", True
        )

    def reads_a_snapshot(self, connection: Connection) -> bool:
        """Never: one writer at a time, a conflict is always with a visible row."""
        return False

    def greatest(self, *values: Any) -> ColumnElement[Any]:
        """``max()`` of several arguments."""
        return func.max(*values)

    def least(self, *values: Any) -> ColumnElement[Any]:
        """``min()`` of several arguments."""
        return func.min(*values)

    def raw_text(self, column: Any) -> ColumnElement[Any]:
        """As bytes: a row inserted by plain SQL may hold bytes that are not UTF-8."""
        return cast(column, LargeBinary)

    def book_recipients(
        self, connection: Connection, recipients: Sequence[str], now: datetime, cutoff: datetime
    ) -> set[str]:
        """An INSERT ... ON CONFLICT DO UPDATE ... WHERE of one row per recipient, sent as one
        multi-row statement (SQLite has no arrays to unnest)."""
        rows = [{"recipient": to, "sent_at": now, "cutoff": cutoff} for to in recipients]
        return set(connection.scalars(_BOOK, rows).all())

    def one_of(self, column: Any, name: str) -> ColumnElement[bool]:
        """An IN list expanded to one parameter per value: SQLite has no array type."""
        return column.in_(bindparam(name, expanding=True))  # type: ignore[no-any-return]

    def raw_time(self, column: Any) -> ColumnElement[Any]:
        """As text: a row inserted by plain SQL may hold a date that is not a date."""
        return cast(column, Text)

    def record_statement(self) -> TextClause:
        """``RECORD``: an UPDATE ... FROM json_each of the results."""
        return _RECORD

    def record_parameters(
        self, results: Sequence[dict[str, Any]], *, token: int, now: datetime
    ) -> dict[str, Any]:
        """The results as a JSON array, times as naive UTC text, which SQLite compares."""
        rows = [
            {**result, "next_attempt_at": _naive_text(result.get("next_attempt_at"))}
            for result in results
        ]
        return {"results": orjson.dumps(rows).decode(), "now": now, "token": token}

    def store_reports(
        self, connection: Connection, reports: Sequence[ReportRow], received_at: datetime
    ) -> ReportsWritten:
        """``STORE_REPORTS``, then ``APPLY_REPORTS`` over the matched ones."""
        payload = [
            {
                "tracking_id": report.tracking_id,
                "status": report.status,
                "done_at": _stored_time(report.done_at),
                "report": report.report,
            }
            for report in reports
        ]
        parameters = {"reports": orjson.dumps(payload).decode(), "received_at": received_at}
        written = ReportsWritten()
        matched = []
        for row in connection.execute(_STORE, parameters).all():
            written.stored[row.status] += 1
            if row.message_id is None:
                written.unmatched_ids.append(row.id)
            else:
                matched.append(row.id)
        written.matched = len(matched)
        applied = connection.execute(_APPLY, {"ids": orjson.dumps(matched).decode()}).all()
        written.updated = len(applied)
        written.delivered_seconds = [row.seconds for row in applied if row.seconds is not None]
        return written

    def rematch_reports(
        self, connection: Connection, tracking_ids: Sequence[str], *, lock: bool
    ) -> ReportsWritten:
        """Nothing to match: SQLite has one writer at a time, so a request and a record never
        interleave, and the record's trigger matches the reports stored before it."""
        return ReportsWritten()

    def planner_estimate(self, connection: Connection, status: str) -> int | None:
        """None: SQLite keeps no statistics to estimate from."""
        return None

    def contains_any_case(self, connection: Connection, column: Any, needle: str) -> Any:
        """Python's str.casefold, registered on the connection as ``outbox_casefold``: SQLite's
        built-in lower() folds ASCII letters only."""
        connection.connection.driver_connection.create_function(  # type: ignore[union-attr]
            CASEFOLD, 1, _casefold, deterministic=True
        )
        return func.outbox_casefold(column).contains(needle.casefold(), autoescape=True)

    @contextmanager
    def one_reading(self, engine: Engine) -> Iterator[Connection]:
        """One read transaction, begun by hand: pysqlite begins only before writes."""
        with engine.connect() as connection:
            connection.exec_driver_sql("BEGIN")
            yield connection
            connection.commit()  # keeps the gate's row if this reading created it

    def migration_engine(self, url: URL) -> Engine | None:
        """An engine whose every transaction holds the write lock. pysqlite emits no BEGIN
        before DDL, so Alembic's statements would each commit on their own and two migrations
        would interleave; with BEGIN IMMEDIATE emitted here (the recipe of SQLAlchemy's pysqlite
        documentation) the whole migration is one transaction and a second one waits for it at
        its BEGIN."""
        engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": LOCK_WAIT_SECONDS})

        @event.listens_for(engine, "connect")
        def _driver_leaves_transactions_to_us(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin_with_the_write_lock(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    @contextmanager
    def migration_lock(self, engine: Engine, *, key: int, poll: timedelta) -> Iterator[None]:
        """Nothing to take: the migration engine begins the run's one transaction holding the
        database's write lock."""
        yield


def _casefold(value: str | None) -> str | None:
    return None if value is None else value.casefold()


def _naive_text(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


def _stored_time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime(TIME_FORMAT)


def _booking() -> Any:
    """``book_recipients``' statement: an existing recipient's time moves only past the cutoff."""
    insert = sqlite.insert(outbox_recipient_pacing)
    return insert.on_conflict_do_update(
        index_elements=["recipient"],
        set_={"sent_at": insert.excluded.sent_at},
        where=outbox_recipient_pacing.c.sent_at
        <= bindparam("cutoff", type_=outbox_recipient_pacing.c.sent_at.type),
    ).returning(outbox_recipient_pacing.c.recipient)


_BOOK = _booking()
