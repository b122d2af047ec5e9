"""What a migration does on PostgreSQL, statement by statement: locks it holds, rows it reads.

`LockWatch` listens to every statement SQLAlchemy sends while a migration runs in-process and
notes each breach of the zero-downtime rules:

- inside a transaction, a lock that stops writers (SHARE or stronger) on a table that existed
  before the migration, taken with no lock_timeout or a long one: waiting behind a long
  transaction, it would queue every session touching the table behind its own request;
- inside such a transaction, while that lock is held, a statement that reads or writes rows of
  that table (an index built in place, a constraint validated at once, a rewrite, a backfill):
  the lock then lasts as long as the table is large;
- outside a transaction, a statement other than those PostgreSQL runs only there (CONCURRENTLY),
  a VALIDATE CONSTRAINT, transaction control or a read: it ran without any lock_timeout.

The rows are counted by PostgreSQL itself (pg_stat_xact_user_tables of the migration's own
transaction), the locks read from pg_locks, both on the migration's connection.
`Interrupt` stops a migration before a chosen statement, as a killed process would.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, event

# The lock modes that stop inserts and updates (they conflict with ROW EXCLUSIVE).
BLOCKS_WRITERS = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")
# The longest lock_timeout that still counts as short.
SHORT_LOCK_TIMEOUT_MS = 1000
STRONG_LOCKS = f"""
SELECT c.relname, l.mode FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation
WHERE l.pid = pg_backend_pid() AND l.granted AND c.relkind IN ('r', 'p')
  AND l.mode IN ({", ".join(f"'{mode}'" for mode in BLOCKS_WRITERS)})
"""
ROWS_TOUCHED = """
SELECT relname, seq_tup_read + coalesce(idx_tup_fetch, 0) + n_tup_ins + n_tup_upd + n_tup_del
FROM pg_stat_xact_user_tables
"""
LOCK_TIMEOUT = "SELECT setting::int FROM pg_settings WHERE name = 'lock_timeout'"
# What may run outside a transaction: what must (CONCURRENTLY), what takes no lock that stops
# writers (VALIDATE CONSTRAINT), transaction control, settings and reads.
# One statement only: a batch sent in one call would hide its statements from the watch.
OUTSIDE_A_TRANSACTION = re.compile(
    r"^\s*(BEGIN|COMMIT|ROLLBACK|SET|SHOW|SELECT|WITH)\b|\bCONCURRENTLY\b|\bVALIDATE CONSTRAINT\b",
    re.IGNORECASE,
)


def one_line(statement: str) -> str:
    return " ".join(statement.split())[:160]


@dataclass
class LockWatch:
    """The breaches of one migration (``revision``) over the tables that existed before it."""

    revision: str
    tables: set[str]
    breaches: list[str] = field(default_factory=list)
    statements: int = 0
    _rows_before: dict[str, int] = field(default_factory=dict)
    _held_before: set[tuple[str, str]] = field(default_factory=set)

    def before(self, dbapi: psycopg.Connection[Any], statement: str) -> None:
        self.statements += 1
        idle = dbapi.info.transaction_status == TransactionStatus.IDLE
        if idle and dbapi.autocommit:
            single = ";" not in statement.strip().rstrip(";")
            if not (single and OUTSIDE_A_TRANSACTION.search(statement)):
                self._breach(statement, "runs outside a transaction, so with no lock_timeout")
            return
        # Read in the statement's transaction (begun here when it is the first one).
        self._rows_before = _rows(dbapi)
        self._held_before = self._strong_locks(dbapi)

    def after(self, dbapi: psycopg.Connection[Any], statement: str) -> None:
        if dbapi.info.transaction_status != TransactionStatus.INTRANS:
            return
        held = self._strong_locks(dbapi)
        if not held:
            return
        timeout = int(dbapi.execute(LOCK_TIMEOUT).fetchone()[0])  # type: ignore[index]
        short = 0 < timeout <= SHORT_LOCK_TIMEOUT_MS
        rows = _rows(dbapi)
        for table, mode in sorted(held):
            if (table, mode) not in self._held_before and not short:
                self._breach(statement, f"takes {mode} on {table} with lock_timeout {timeout} ms")
            touched = rows.get(table, 0) - self._rows_before.get(table, 0)
            if touched:
                self._breach(statement, f"touches {touched} rows of {table} holding {mode}")

    def _strong_locks(self, dbapi: psycopg.Connection[Any]) -> set[tuple[str, str]]:
        """The locks stopping writers this transaction holds on tables older than it."""
        locks = dbapi.execute(STRONG_LOCKS)
        return {(table, mode) for table, mode in locks if table in self.tables}

    def _breach(self, statement: str, what: str) -> None:
        self.breaches.append(f"migration {self.revision}: `{one_line(statement)}` {what}")


def _rows(dbapi: psycopg.Connection[Any]) -> dict[str, int]:
    return {table: int(count) for table, count in dbapi.execute(ROWS_TOUCHED)}


@contextmanager
def watching(watch: LockWatch) -> Iterator[LockWatch]:
    """Feed every statement sent through SQLAlchemy to ``watch`` for the block's length."""

    def before(_c: Any, cursor: Any, statement: str, *_: Any) -> None:
        watch.before(cursor.connection, statement)

    def after(_c: Any, cursor: Any, statement: str, *_: Any) -> None:
        watch.after(cursor.connection, statement)

    event.listen(Engine, "before_cursor_execute", before)
    event.listen(Engine, "after_cursor_execute", after)
    try:
        yield watch
    finally:
        event.remove(Engine, "before_cursor_execute", before)
        event.remove(Engine, "after_cursor_execute", after)


class Interrupted(Exception):
    """Raised in place of the statement an interruption stopped."""


@dataclass
class Interrupt:
    """Stop before the ``at``-th statement sent while its connection had nothing uncommitted.

    Only there does an interruption leave a state of its own: one inside a transaction rolls
    back to the same state as one before its BEGIN.
    """

    at: int
    seen: int = 0
    statement: str | None = None

    def before(self, dbapi: psycopg.Connection[Any], statement: str) -> None:
        if dbapi.info.transaction_status != TransactionStatus.IDLE:
            return
        self.seen += 1
        if self.seen == self.at:
            self.statement = one_line(statement)
            raise Interrupted(self.statement)


@contextmanager
def interrupting(interrupt: Interrupt) -> Iterator[Interrupt]:
    def before(_c: Any, cursor: Any, statement: str, *_: Any) -> None:
        interrupt.before(cursor.connection, statement)

    event.listen(Engine, "before_cursor_execute", before)
    try:
        yield interrupt
    finally:
        event.remove(Engine, "before_cursor_execute", before)
