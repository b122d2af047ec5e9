"""PostgreSQL: many workers at once (SKIP LOCKED), roles and rights, its own clock, LISTEN."""

from __future__ import annotations

import time
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
    DateTime,
    Engine,
    String,
    Table,
    Text,
    TextClause,
    any_,
    bindparam,
    cast,
    func,
    text,
    type_coerce,
)
from sqlalchemy.dialects import postgresql

from models.databases.array_text import ArrayText, array_text
from models.databases.database import Database, ReportRow, ReportsWritten
from models.databases.liveness import checked_engine
from models.reports import FINAL_DELIVERY_STATUSES
from models.types import UtcDateTime

if TYPE_CHECKING:
    from models.message import NewMessage

# The receiver's match lock: the same key as the trigger function of migrations 0006 and 0007
# (a test checks that they agree).
MATCH_LOCK = 122550254464888
_SNAPSHOT_LEVELS = frozenset({"REPEATABLE_READ", "SERIALIZABLE"})
# Where the server's default isolation level is kept, per driver connection.
_DEFAULT_LEVEL = "outbox_default_isolation_level"
# The live columns of the named tables in the current schema (the start check's schema question).
CATALOGUE_COLUMNS = text(
    "SELECT c.relname, a.attname FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid "
    "WHERE c.relnamespace = to_regnamespace(current_schema()) AND c.relname = ANY(:tables) "
    "AND a.attnum > 0 AND NOT a.attisdropped"
)
_FINAL = ", ".join(f"'{status}'" for status in sorted(FINAL_DELIVERY_STATUSES))

# clock_timestamp(), not now(): the time of the read itself, also inside a transaction.
CLOCK_NOW = text("SELECT clock_timestamp()")

# How many rows of a status the planner expects (from the statistics ANALYZE keeps, scaled to
# the table's current size).
ESTIMATE = text("EXPLAIN (FORMAT JSON) SELECT 1 FROM outbox_messages WHERE status = :status")

# The results come as one JSON object keyed by row id, parsed once, and each row's entry is
# looked up in it (a binary search in jsonb). No join with the results: joining a record set
# built from the parameter let the planner put the table on the outside whenever it guessed
# one sending row, and then rebuild the record set for every row (a record of 500 took 100-150
# ms instead of 25, and a prepared statement keeps such a plan for good). The object is read
# through a scalar subquery, a parameter computed once, not as a relation in FROM: the UPDATE
# carries a copy of the whole row of every relation in its FROM along with each row it writes
# (for rechecking a concurrent update), here the results, 50-70 KB for 500 rows, copied for
# each row: a fifth of the statement's time. The rows are found by id, through the primary
# key (or a scan while the table is small): the status test is written so that the planner
# cannot choose the lease index instead, whose dead entries grow with every claim until a
# vacuum.
_RESULT = "(SELECT results FROM r) -> m.id::text"
RECORD = f"""
WITH r AS MATERIALIZED (SELECT CAST(:results AS jsonb) AS results)
UPDATE outbox_messages AS m SET
    status = {_RESULT} ->> 'status',
    attempts = CAST({_RESULT} ->> 'attempts' AS integer),
    next_attempt_at = coalesce(
        CAST({_RESULT} ->> 'next_attempt_at' AS timestamptz), m.next_attempt_at),
    locked_until = NULL,
    claim_token = NULL,
    tracking_id = coalesce({_RESULT} ->> 'tracking_id', m.tracking_id),
    last_error = {_RESULT} ->> 'last_error',
    reach_evidence = coalesce(m.reach_evidence, {_RESULT} ->> 'reach_evidence'),
    suspicion = coalesce(CAST({_RESULT} ->> 'suspicion' AS integer), m.suspicion),
    accepted_at = CASE WHEN {_RESULT} ->> 'status' = 'accepted' THEN :now
                  ELSE m.accepted_at END,
    updated_at = :now
WHERE m.id = ANY(CAST(:ids AS bigint[]))
  AND coalesce(m.status, '') = 'sending' AND m.claim_token = :token
RETURNING m.id"""

# From the reports just stored (or just matched), the best per message, written to its message
# when it beats the status shown there. Returns, aggregated, what was stored (by status: how
# many, how many matched, the ids of the others) and what was updated, with the seconds from
# accepted to DELIVERED of each message just delivered.
_APPLY = f"""
, best AS (
    SELECT DISTINCT ON (message_id) message_id, status, event_at,
           status IN ({_FINAL}) AS final
    FROM stored WHERE message_id IS NOT NULL
    ORDER BY message_id, final DESC, event_at DESC, id
), applied AS (
    UPDATE outbox_messages AS m
    SET delivery_status = b.status, delivery_status_at = b.event_at
    FROM best AS b
    WHERE m.id = b.message_id
      AND (m.delivery_status IS NULL
           OR (b.final, b.event_at)
              > (m.delivery_status IN ({_FINAL}), m.delivery_status_at))
    RETURNING m.delivery_status,
        CASE WHEN m.delivery_status = 'DELIVERED' AND m.accepted_at IS NOT NULL
        THEN greatest(0, extract(epoch FROM m.delivery_status_at - m.accepted_at))::float8
        END AS seconds
)
SELECT 'stored' AS kind, status, count(*) AS reports, count(message_id) AS matched,
       array_agg(id) FILTER (WHERE message_id IS NULL) AS unmatched_ids,
       NULL::float8[] AS delivered_seconds
FROM stored GROUP BY status
UNION ALL
SELECT 'applied', NULL, count(*), NULL, NULL,
       array_agg(seconds) FILTER (WHERE seconds IS NOT NULL)
FROM applied"""

# Every report of a request inserted in one statement, matched to its message where one holds
# that tracking id, and applied.
STORE_REPORTS = f"""
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
){_APPLY}"""

# The reports of the request's tracking ids still unmatched (stored now, or repeated) that now
# find their message, matched and applied.
REMATCH_REPORTS = f"""
WITH stored AS (
    UPDATE outbox_delivery_reports AS r SET message_id = m.id
    FROM outbox_messages AS m
    WHERE r.tracking_id = ANY(CAST(:tracking_ids AS text[])) AND r.message_id IS NULL
      AND m.tracking_id = r.tracking_id
    RETURNING r.id, r.status, r.message_id, coalesce(r.done_at, r.received_at) AS event_at
){_APPLY}"""

_RECORD = text(RECORD).bindparams(
    bindparam("now", type_=UtcDateTime()), bindparam("token", type_=BigInteger())
)
# -- book_recipients --: the batch's recipients as one array, unnested in order.
BOOK_RECIPIENTS = """
INSERT INTO outbox_recipient_pacing AS booked (recipient, sent_at)
SELECT unnest(CAST(:recipients AS text[])), :now
ON CONFLICT (recipient) DO UPDATE SET sent_at = excluded.sent_at
WHERE booked.sent_at <= :cutoff
RETURNING booked.recipient
"""
_BOOK = text(BOOK_RECIPIENTS).bindparams(
    bindparam("now", type_=UtcDateTime()), bindparam("cutoff", type_=UtcDateTime())
)
_STORE = text(STORE_REPORTS).bindparams(bindparam("received_at", type_=UtcDateTime()))
_REMATCH = text(REMATCH_REPORTS)
_TAKE_MATCH_LOCK = text("SELECT pg_advisory_xact_lock(:lock)")


class PostgreSQL(Database):
    """Rows are locked one by one, so workers claim side by side; rights belong to roles."""

    dialect = "postgresql"
    has_roles = True
    listens_for_inserts = True
    keeps_its_own_clock = True
    has_session_locks = True
    changes_columns_online = True

    def make_engine(self, url: URL, *, pooled: bool, options: dict[str, Any]) -> Engine:
        """Connections checked before use (``liveness``), five kept; behind a transaction
        pooler, no server-side prepared statements: a statement prepared on one server
        connection is unknown on the next, or means another client's statement there."""
        if pooled:
            options["connect_args"] = {"prepare_threshold": None, **options.get("connect_args", {})}
        options.setdefault("pool_size", 5)
        return checked_engine(url, options)

    def table_columns(self, connection: Connection, tables: list[str]) -> dict[str, set[str]]:
        """One catalogue query, in the current schema: every process asks it at start."""
        found: dict[str, set[str]] = {}
        for table, column in connection.execute(CATALOGUE_COLUMNS, {"tables": tables}):
            found.setdefault(table, set()).add(column)
        return found

    def supports_transaction_pooler(self, url: URL) -> bool:
        """Through psycopg only, whose prepared statements can be turned off."""
        return url.get_driver_name() == "psycopg"

    def worker_processes(self, wanted: int) -> int:
        """As many as wanted: SKIP LOCKED keeps their claims apart."""
        return wanted

    def clock_now(self, connection: Connection) -> datetime:
        """``clock_timestamp()``, as aware UTC."""
        moment: datetime = connection.scalar(CLOCK_NOW)
        return moment.astimezone(UTC)

    def database_file(self, url: URL) -> Path | None:
        """None: a server holds it."""
        return None

    def insert(self, table: Any) -> postgresql.Insert:
        """PostgreSQL's INSERT, for its ON CONFLICT clauses."""
        return postgresql.insert(table)

    def same_message_columns(self, table: Table, message: NewMessage) -> list[Any]:
        """``outbox_message_is`` (migration 0012) answers with the owner's rights, so the
        producer's role reads neither the recipient nor the content of another's row."""
        same = func.outbox_message_is(
            message.client_message_id,
            message.recipient,
            bindparam("content", message.content.to_api(), type_=postgresql.JSONB()),
        )
        return [same.label("same")]

    def begin_before_savepoint(self, connection: Connection) -> None:
        """Nothing: psycopg begins the transaction with its first statement."""

    def in_autocommit(self, connection: Connection) -> bool:
        """What psycopg's connection says."""
        return bool(getattr(connection.connection.driver_connection, "autocommit", False))

    def reads_a_snapshot(self, connection: Connection) -> bool:
        """Read without a round trip where it can be: the level SQLAlchemy set on the driver's
        connection (an engine's or a connection's ``isolation_level``), else the server's
        default for this connection, asked once per connection. A level set by ``SET
        TRANSACTION`` in SQL is not seen: a hidden duplicate then aborts the transaction, as
        PostgreSQL has it."""
        level = getattr(connection.connection.driver_connection, "isolation_level", None)
        if level is not None:
            return str(getattr(level, "name", level)) in _SNAPSHOT_LEVELS
        info = connection.connection.info
        if _DEFAULT_LEVEL not in info:
            default = connection.exec_driver_sql("SHOW default_transaction_isolation").scalar()
            info[_DEFAULT_LEVEL] = str(default).upper().replace(" ", "_")
        return str(info[_DEFAULT_LEVEL]) in _SNAPSHOT_LEVELS

    def greatest(self, *values: Any) -> ColumnElement[Any]:
        """``greatest()``."""
        return func.greatest(*values)

    def least(self, *values: Any) -> ColumnElement[Any]:
        """``least()``."""
        return func.least(*values)

    def raw_text(self, column: Any) -> ColumnElement[Any]:
        """Text as stored (the server checked its encoding); JSON as its text."""
        return column if isinstance(column.type, String) else cast(column, Text)

    def book_recipients(
        self, connection: Connection, recipients: Sequence[str], now: datetime, cutoff: datetime
    ) -> set[str]:
        """``BOOK_RECIPIENTS``: one statement text whatever the batch's size."""
        parameters = {"recipients": list(recipients), "now": now, "cutoff": cutoff}
        return set(connection.scalars(_BOOK, parameters).all())

    def one_of(self, column: Any, name: str) -> ColumnElement[bool]:
        """``= ANY`` of one array parameter: one statement text whatever the list's length,
        which the driver parses once (an expanded IN list is a new text, parsed every time)."""
        values = cast(bindparam(name, type_=ArrayText()), postgresql.ARRAY(column.type))
        return column == any_(values)  # type: ignore[no-any-return]

    def raw_time(self, column: Any) -> ColumnElement[Any]:
        """As the driver reads it, aware (no converter per value): the screen takes it to UTC."""
        return type_coerce(column, DateTime(timezone=True))

    def record_statement(self) -> TextClause:
        """``RECORD``: an UPDATE reading each row's result from one jsonb object by id."""
        return _RECORD

    def record_parameters(
        self, results: Sequence[dict[str, Any]], *, token: int, now: datetime
    ) -> dict[str, Any]:
        """The results keyed by row id, times in ISO format with their zone, nulls left out:
        an absent key reads as null too, and the server parses a batch's object in half the
        time without them (most rows carry no error and no next attempt)."""
        by_id = {str(result["id"]): _present_columns(result) for result in results}
        ids = array_text([result["id"] for result in results])  # cast by the statement
        return {"results": orjson.dumps(by_id).decode(), "ids": ids, "now": now, "token": token}

    def store_reports(
        self, connection: Connection, reports: Sequence[ReportRow], received_at: datetime
    ) -> ReportsWritten:
        """``STORE_REPORTS``: insert, match and apply in one statement."""
        payload = [
            {
                "position": position,
                "tracking_id": report.tracking_id,
                "status": report.status,
                "done_at": None if report.done_at is None else report.done_at.isoformat(),
                "report": report.report,
            }
            for position, report in enumerate(reports)
        ]
        parameters = {"reports": orjson.dumps(payload).decode(), "received_at": received_at}
        return _written(connection.execute(_STORE, parameters).all())

    def rematch_reports(
        self, connection: Connection, tracking_ids: Sequence[str], *, lock: bool
    ) -> ReportsWritten:
        """``REMATCH_REPORTS``, under the exclusive match lock when ``lock``. A record in
        flight can miss a report committed just after it read, while the request missed the
        record's uncommitted tracking id; every record statement's trigger holds the match
        lock shared until it commits, so whichever commits first, the other sees it."""
        if lock:
            connection.execute(_TAKE_MATCH_LOCK, {"lock": MATCH_LOCK})
        return _written(connection.execute(_REMATCH, {"tracking_ids": list(tracking_ids)}).all())

    def planner_estimate(self, connection: Connection, status: str) -> int | None:
        """``ESTIMATE``: EXPLAIN's row count."""
        plan = connection.execute(ESTIMATE, {"status": status}).scalar_one()
        return int(plan[0]["Plan"]["Plan Rows"])

    def contains_any_case(self, connection: Connection, column: Any, needle: str) -> Any:
        """``lower()`` on both sides, which follows the database's locale beyond ASCII."""
        return func.lower(column).contains(needle.lower(), autoescape=True)

    @contextmanager
    def one_reading(self, engine: Engine) -> Iterator[Connection]:
        """One REPEATABLE READ transaction, without JIT: the planner costs an estimate over a
        large history high enough to JIT-compile it, and loading the JIT provider costs a
        fresh connection 40-100 ms; none of these small statements gains from it."""
        repeatable = engine.connect().execution_options(isolation_level="REPEATABLE READ")
        with repeatable as connection, connection.begin():
            connection.execute(text("SET LOCAL jit = off"))
            yield connection

    def migration_engine(self, url: URL) -> Engine | None:
        """None: the outbox's engine (a pooler URL keeps working)."""
        return None

    @contextmanager
    def migration_lock(self, engine: Engine, *, key: int, poll: timedelta) -> Iterator[None]:
        """A transaction-scoped advisory lock, so it goes with its transaction, which a
        transaction pooler keeps on one server connection and which ends when this process
        dies. That transaction holds no snapshot and no table lock: concurrent index builds,
        which wait for older transactions, do not wait for it. A run that finds the lock taken
        tries again in a new transaction every ``poll``: one waiting inside its transaction
        would be such an older transaction, and the running migration's index build would
        wait for it forever."""
        with engine.connect() as holder:
            # Literal SQL: a bound parameter leaves the idle transaction holding a catalogue
            # snapshot, which every concurrent index build would wait for.
            while True:
                holder.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
                taken = f"SELECT pg_try_advisory_xact_lock({int(key)})"
                if holder.exec_driver_sql(taken).scalar():
                    break
                holder.rollback()
                time.sleep(poll.total_seconds())
            yield
            holder.rollback()


def _written(rows: Sequence[Any]) -> ReportsWritten:
    """What the aggregated rows of a store or rematch statement say."""
    written = ReportsWritten()
    for row in rows:
        if row.kind == "applied":
            written.updated += row.reports
            written.delivered_seconds += row.delivered_seconds or []
        else:
            written.stored[row.status] += row.reports
            written.matched += row.matched
            written.unmatched_ids += row.unmatched_ids or []
    return written


def _present_columns(result: dict[str, Any]) -> dict[str, Any]:
    """A result's columns but its id and its nulls, its next attempt in ISO format."""
    columns = {name: value for name, value in result.items() if value is not None and name != "id"}
    if "next_attempt_at" in columns:  # most results carry none: one look-up, not one per column
        columns["next_attempt_at"] = columns["next_attempt_at"].astimezone(UTC).isoformat()
    return columns
