"""The producer's SQL and what its results mean, shared by the sync and the async entry points.

``enqueue`` and ``aenqueue`` (and their ``_many`` kin) differ only in awaiting: every statement
is built here and every result is judged here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from sqlalchemy import Connection, Dialect, Insert, Select, select
from sqlalchemy.dialects import postgresql, sqlite

from models.errors import DuplicateMessage
from models.message import NewMessage
from models.outbox import OutboxMessage

IfExists = Literal["raise", "return"]
ROWS_PER_STATEMENT = 1_000  # 7 parameters a row stays under SQLite's and PostgreSQL's limits
# Where the outbox lives when a session has several binds.
OUTBOX_BIND: dict[str, Any] = {"mapper": OutboxMessage}
BEGIN = "BEGIN"


# -- needs_begin -- Whether the producer must open the caller's transaction itself before its
# first write. pysqlite (and aiosqlite, built on it) in their default mode send BEGIN only
# before INSERT/UPDATE/DELETE, not before a SAVEPOINT: enqueue_many's savepoint would then be
# the outermost transaction, and its RELEASE would commit the rows whatever the caller does
# next. SQLAlchemy's documented remedy is to emit BEGIN oneself; the producer does it on the
# caller's connection, so that it holds for engines the outbox did not configure. Other
# drivers (psycopg) open the transaction before the first statement on their own.
def needs_begin(connection: Connection) -> bool:
    if connection.dialect.name != "sqlite":
        return False
    driver = connection.connection.driver_connection
    return not getattr(driver, "in_transaction", True)


# -- insert_one -- One row, ON CONFLICT (client_message_id) DO NOTHING, returning the row
# (none when the id was already there, and the caller's transaction stays healthy).
def insert_one(dialect: Dialect, message: NewMessage) -> Insert:
    return _insert_ignoring_duplicates(dialect).values(message.row()).returning(OutboxMessage)


# -- insert_many -- The same for many rows: given one parameter set per row, SQLAlchemy's
# "insertmanyvalues" sends multi-row INSERT ... RETURNING statements of up to 1,000 rows.
def insert_many(dialect: Dialect) -> Insert:
    return (
        _insert_ignoring_duplicates(dialect)
        .returning(OutboxMessage.client_message_id)
        .execution_options(insertmanyvalues_page_size=ROWS_PER_STATEMENT)
    )


# -- existing -- The row holding the message's client_message_id (for if_exists="return").
def existing(message: NewMessage) -> Select[OutboxMessage]:
    return select(OutboxMessage).where(OutboxMessage.client_message_id == message.client_message_id)


def refuse_duplicate(message: NewMessage, if_exists: IfExists) -> None:
    """The insert found the id taken: an error unless the caller asked for the existing row."""
    if if_exists != "return":
        raise DuplicateMessage([message.client_message_id])


def same_message(message: NewMessage, row: OutboxMessage) -> OutboxMessage:
    """The existing row, provided it holds the same message: a reused key with other data is
    always refused."""
    if row.recipient != message.recipient or row.content != message.content.to_api():
        raise DuplicateMessage(
            [message.client_message_id], "already in the outbox with another recipient or content"
        )
    return row


def refuse_duplicates(
    batch: Sequence[NewMessage], inserted: list[str], if_exists: IfExists
) -> None:
    """After a batch insert: with if_exists="raise", any id left out is an error (raised inside
    the savepoint, so that nothing of the batch stays)."""
    if if_exists == "raise" and len(inserted) < len(batch):
        added = set(inserted)
        raise DuplicateMessage(
            [m.client_message_id for m in batch if m.client_message_id not in added]
        )


def by_columns(batch: Iterable[NewMessage]) -> list[list[dict[str, Any]]]:
    """Rows grouped by the columns they set: scheduled ones (a send_at) apart from the rest.

    A multi-row INSERT takes its columns from its first row; rows without a send_at must
    keep the column's default, now(), so they go in a statement of their own.
    """
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for message in batch:
        row = message.row()
        groups.setdefault(frozenset(row), []).append(row)
    return list(groups.values())


def _insert_ignoring_duplicates(dialect: Dialect) -> Insert:
    """INSERT ... ON CONFLICT (client_message_id) DO NOTHING for the session's database."""
    if dialect.name == "postgresql":
        return postgresql.insert(OutboxMessage).on_conflict_do_nothing(
            index_elements=["client_message_id"]
        )
    if dialect.name == "sqlite":
        return sqlite.insert(OutboxMessage).on_conflict_do_nothing(
            index_elements=["client_message_id"]
        )
    raise NotImplementedError(f"the outbox supports PostgreSQL and SQLite, not {dialect.name}")
