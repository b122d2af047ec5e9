"""Schema changes on a live PostgreSQL outbox: quick locks, concurrent builds, re-runnable steps.

A migration's PostgreSQL part runs inside `steps()` (Alembic's autocommit block: no transaction
of Alembic's is open) and is made of these steps, each safe to run again after an interruption:

- `short_transaction`: catalogue changes (a nullable column, a constant default, a constraint
  NOT VALID, a trigger, a new table) as one transaction of their own that waits at most
  LOCK_TIMEOUT for each lock. A migration waiting behind a long transaction would otherwise
  queue every session that touches the table behind its own request; it gives way instead and
  tries again, with growing pauses, for up to GIVE_UP_AFTER.
- `create_index`: CREATE INDEX CONCURRENTLY IF NOT EXISTS; an index an interrupted build left
  INVALID is dropped (concurrently) and built again.
- `add_check_constraint`: NOT VALID in a short transaction, then VALIDATE CONSTRAINT, which
  reads the table under a lock that lets reads and writes through. Its two halves apart
  (`add_check_constraint_not_valid`, `validate_constraint`) let existing rows be repaired
  between them, while the constraint already checks every new write.
- `add_nullable_column` / `drop_column`: a nullable column without a default, which PostgreSQL
  adds or drops as a catalogue change (a short transaction, IF [NOT] EXISTS); SQLite, which
  takes no IF [NOT] EXISTS there, is asked first.
- `update_in_batches`: a backfill or repair of existing rows, BATCH_ROWS rows per short
  transaction in id order, so a writer waits for at most one batch's row locks.

Offline (`alembic upgrade head --sql`) the same statements are printed, without the checks
that decide at run time what is left to do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from alembic import op
from sqlalchemy import Column, Connection, CursorResult, MetaData, Table, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateTable, SchemaItem

from models.databases import database_of
from worker.errors import LockNotTaken

# How long one catalogue change may wait for its lock before giving way to the application.
LOCK_TIMEOUT = timedelta(milliseconds=30)
# The pauses between tries grow from the first to the longest; the step fails after this long.
FIRST_PAUSE = timedelta(milliseconds=100)
LONGEST_PAUSE = timedelta(seconds=5)
GIVE_UP_AFTER = timedelta(minutes=10)
LOCK_NOT_AVAILABLE = "55P03"
# A transaction of SQL text goes to the server in one round trip, so its locks are never held
# while this process waits for the CPU between statements (tests turn it off to watch each).
ONE_ROUND_TRIP = True
# The most rows one batch of `update_in_batches` changes, and so holds locked until it commits.
BATCH_ROWS = 1000

Step = str | Callable[[], object]
T = TypeVar("T")


@contextmanager
def steps() -> Iterator[None]:
    """Outside Alembic's transaction: each step below commits on its own."""
    with op.get_context().autocommit_block():
        yield


def offline() -> bool:
    """True when the statements are printed (`--sql`) rather than run."""
    return bool(op.get_context().as_sql)


def short_transaction(*changes: Step, monotonic: Callable[[], float] = time.monotonic) -> None:
    """Run ``changes`` (SQL text, or a call of Alembic's ``op``) as one quick transaction.

    Every lock is waited for at most LOCK_TIMEOUT; on a timeout the whole transaction rolls
    back (releasing what it held) and runs again after a pause.
    """
    if offline():
        _run_all(("BEGIN", *_quick_settings(), *changes, "COMMIT"))
        return
    connection = op.get_bind()
    _retrying(lambda: _one_transaction(connection, changes), monotonic)


def update_in_batches(
    table: str, assignments: str, condition: str, *, monotonic: Callable[[], float] = time.monotonic
) -> None:
    """UPDATE ``table`` SET ``assignments`` WHERE ``condition``, BATCH_ROWS rows at a time.

    Each batch is a short transaction (retried as `short_transaction` is) that locks the next
    matching rows in id order after the previous batch's; it ends when a batch finds none.
    Run again after an interruption, it finds only the rows still to change. ``condition``
    must stop matching a row once it is changed. Offline, one UPDATE of every row is printed.
    """
    if offline():
        short_transaction(f"UPDATE {table} SET {assignments} WHERE {condition}")
        return
    connection = op.get_bind()
    after: int | None = None
    while True:
        batch = partial(_ids_changed, _batch_statement(table, assignments, condition, after))
        changed = _retrying(partial(_in_transaction, connection, batch), monotonic)
        if not changed:
            return
        after = max(changed)


def _batch_statement(table: str, assignments: str, condition: str, after: int | None) -> str:
    """The UPDATE of the next BATCH_ROWS matching rows after id ``after``, returning their ids."""
    matching = f"({condition})" if after is None else f"id > {after} AND ({condition})"
    return (
        f"UPDATE {table} SET {assignments} WHERE id IN ("
        f"SELECT id FROM {table} WHERE {matching} ORDER BY id LIMIT {BATCH_ROWS} FOR UPDATE"
        f") AND ({condition}) RETURNING id"
    )


def _ids_changed(statement: str, connection: Connection) -> list[int]:
    return [int(changed) for changed in _send(connection, statement).scalars()]


def _retrying(attempt: Callable[[], T], monotonic: Callable[[], float]) -> T:
    """``attempt`` (one transaction) again after a growing pause while it meets a lock timeout."""
    deadline = monotonic() + GIVE_UP_AFTER.total_seconds()
    pause = FIRST_PAUSE
    tries = 1
    while True:
        try:
            return attempt()
        except DBAPIError as error:
            if _sqlstate(error) != LOCK_NOT_AVAILABLE:
                raise
            if monotonic() + pause.total_seconds() > deadline:
                raise LockNotTaken(_gave_up(error, tries)) from None
        time.sleep(pause.total_seconds())
        pause = min(pause * 2, LONGEST_PAUSE)
        tries += 1


def create_table_sql(name: str, *columns: SchemaItem) -> str:
    """CREATE TABLE as text, to send with the other statements of its transaction at once."""
    table = Table(name, MetaData(), *columns)
    return str(CreateTable(table).compile(dialect=op.get_context().dialect)).strip()


def create_index(
    name: str, table: str, columns: str, *, where: str | None = None, unique: bool = False
) -> None:
    """CREATE INDEX CONCURRENTLY IF NOT EXISTS, first dropping one an interrupted build left."""
    if not offline() and index_is_invalid(name):
        drop_index(name)
    kind = "UNIQUE INDEX" if unique else "INDEX"
    condition = f" WHERE {where}" if where else ""
    op.execute(f"CREATE {kind} CONCURRENTLY IF NOT EXISTS {name} ON {table} ({columns}){condition}")


def drop_index(name: str) -> None:
    """DROP INDEX CONCURRENTLY IF EXISTS: waits for no one's rows, blocks no one's."""
    op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def index_is_invalid(name: str) -> bool:
    """True for an index that exists but that an interrupted concurrent build left unusable."""
    query = text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:name)")
    return bool(op.get_bind().scalar(query, {"name": name}))


def index_definition(name: str) -> str | None:
    """The index's definition as PostgreSQL prints it, None when it does not exist."""
    query = text("SELECT pg_get_indexdef(to_regclass(:name))")
    definition = op.get_bind().scalar(query, {"name": name})
    return None if definition is None else str(definition)


def add_check_constraint(table: str, name: str, condition: str) -> None:
    """Add the constraint NOT VALID (a catalogue change), then validate it apart."""
    add_check_constraint_not_valid(table, name, condition)
    validate_constraint(table, name)


def add_check_constraint_not_valid(table: str, name: str, condition: str) -> None:
    """The constraint checks every new write from now on; existing rows are not read yet."""
    if offline() or _constraint_validated(table, name) is None:
        short_transaction(
            f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID"
        )


def validate_constraint(table: str, name: str) -> None:
    """VALIDATE CONSTRAINT unless done: reads the table under a lock letting writers through."""
    if offline() or not _constraint_validated(table, name):
        op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


def add_nullable_column(table: str, column: Column[Any]) -> None:
    """Add ``column`` (nullable, no default) to ``table`` unless it is there."""
    if database_of(op.get_context().dialect).changes_columns_online:  # offline too (`--sql`)
        kind = column.type.compile(dialect=op.get_context().dialect)
        with steps():
            short_transaction(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column.name} {kind}")
    elif column.name not in _sqlite_columns(table):
        op.add_column(table, column)


def add_column_with_constant_default(table: str, column: Column[Any], default: str) -> None:
    """Add ``column`` NOT NULL DEFAULT ``default`` (a constant, as SQL) unless it is there.

    PostgreSQL keeps a constant default in the catalogue: existing rows are neither rewritten
    nor read, so this is the same short catalogue change as a nullable column.
    """
    dialect = op.get_context().dialect
    if database_of(dialect).changes_columns_online:  # offline too (`--sql`)
        kind = column.type.compile(dialect=dialect)
        with steps():
            short_transaction(
                f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column.name} {kind} "
                f"NOT NULL DEFAULT {default}"
            )
    elif column.name not in _sqlite_columns(table):
        added = Column(column.name, column.type, nullable=False, server_default=text(default))
        op.add_column(table, added)


def drop_column(table: str, name: str) -> None:
    """Drop column ``name`` of ``table`` if it is there."""
    if database_of(op.get_context().dialect).changes_columns_online:
        op.execute(f"ALTER TABLE {table} DROP COLUMN IF EXISTS {name}")
    elif name in _sqlite_columns(table):
        # A plain DROP COLUMN (SQLite 3.35 and later): a batch copy of the table would lose
        # its triggers on SQLite.
        op.drop_column(table, name)


def _sqlite_columns(table: str) -> set[str]:
    return {column["name"] for column in inspect(op.get_bind()).get_columns(table)}


def column_exists(table: str, column: str) -> bool:
    """True when ``table`` has ``column`` (offline: False, so every step is printed)."""
    if offline():
        return False
    query = text(
        "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(:table) "
        "AND attname = :column AND NOT attisdropped"
    )
    return op.get_bind().scalar(query, {"table": table, "column": column}) is not None


def _constraint_validated(table: str, name: str) -> bool | None:
    """Whether the constraint is validated; None when it does not exist."""
    query = text(
        "SELECT convalidated FROM pg_constraint "
        "WHERE conrelid = to_regclass(:table) AND conname = :name"
    )
    state = op.get_bind().scalar(query, {"table": table, "name": name})
    return None if state is None else bool(state)


def _one_transaction(connection: Connection, changes: tuple[Step, ...]) -> None:
    """BEGIN, the lock timeout, the changes, COMMIT; ROLLBACK on any failure or interruption."""
    statements = [change for change in changes if isinstance(change, str)]
    if ONE_ROUND_TRIP and len(statements) == len(changes):
        _in_one_round_trip(connection, ["BEGIN", *_quick_settings(), *statements, "COMMIT"])
        return
    _in_transaction(connection, lambda _: _run_all(changes))


def _in_transaction(connection: Connection, work: Callable[[Connection], T]) -> T:
    """BEGIN, the lock timeout, ``work``, COMMIT; ROLLBACK on any failure or interruption."""
    connection.exec_driver_sql("BEGIN")
    try:
        for setting in _quick_settings():
            connection.exec_driver_sql(setting)
        done = work(connection)
    except BaseException:
        with suppress(DBAPIError):  # a lost connection has rolled back already
            connection.exec_driver_sql("ROLLBACK")
        raise
    connection.exec_driver_sql("COMMIT")
    return done


def _in_one_round_trip(connection: Connection, statements: list[str]) -> None:
    """The statements as one simple query: the server runs them all before answering."""
    try:
        _send(connection, ";\n".join(statements))
    except BaseException:
        with suppress(DBAPIError):
            connection.exec_driver_sql("ROLLBACK")
        raise


def _send(connection: Connection, sql: str) -> CursorResult[Any]:
    """``sql`` as written, with no parameters: a ``%`` in it is the server's, not the driver's."""
    return connection.exec_driver_sql(sql, execution_options={"no_parameters": True})


def _run_all(changes: tuple[Step, ...]) -> None:
    for change in changes:
        if isinstance(change, str):
            op.execute(change)
        else:
            change()


def _quick_settings() -> tuple[str, str]:
    """The lock timeout, and a commit that does not wait for the disk while holding the locks.

    A crash may lose such a commit (never corrupt anything): the step then runs again, and the
    revision's stamp, committed later and durably, is never kept without it.
    """
    milliseconds = int(LOCK_TIMEOUT.total_seconds() * 1000)
    return f"SET LOCAL lock_timeout = '{milliseconds}ms'", "SET LOCAL synchronous_commit = off"


def _sqlstate(error: DBAPIError) -> str | None:
    return getattr(error.orig, "sqlstate", None)


def _gave_up(error: DBAPIError, tries: int) -> str:
    statement = " ".join(str(error.statement or "").split())
    return (
        f"{tries} tries over {GIVE_UP_AFTER} found a lock held too long for `{statement}` "
        f"(each waited {LOCK_TIMEOUT}): a long transaction holds the table; end it "
        "(see pg_stat_activity) and run the migration again"
    )
