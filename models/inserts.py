"""The producer's SQL and what its results mean, shared by the sync and the async entry points.

``enqueue`` and ``aenqueue`` (and their ``_many`` kin) differ only in awaiting: every statement
is built here and every result is judged here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from sqlalchemy import Column, Dialect, Insert, Row, Select, select
from sqlalchemy.orm import make_transient_to_detached

from models.databases import database_of
from models.errors import DuplicateMessage
from models.message import NewMessage
from models.outbox import OutboxMessage, outbox_messages

IfExists = Literal["raise", "return"]
ROWS_PER_STATEMENT = 1_000  # 8 parameters a row stays under SQLite's and PostgreSQL's limits
# Where the outbox lives when a session has several binds.
OUTBOX_BIND: dict[str, Any] = {"mapper": OutboxMessage}
# What the producer reads back: the id, the key and what the database fills in. Its role may
# read no other column (docs/security.md#a-role-per-process): other messages' recipients and
# contents stay hidden.
READ_BACK: tuple[Column[Any], ...] = tuple(
    column
    for column in outbox_messages.columns
    if column.primary_key or column.server_default is not None or column.name == "client_message_id"
)


def insert_one(dialect: Dialect, message: NewMessage) -> Insert:
    """One row, ON CONFLICT (client_message_id) DO NOTHING, returning what the database filled
    in (nothing when the id was already there, and the caller's transaction stays healthy);
    ``loaded`` makes the row of it."""
    return _insert_ignoring_duplicates(dialect).values(message.row()).returning(*READ_BACK)


def loaded(message: NewMessage, returned: Row[Any]) -> OutboxMessage:
    """The message's row as if loaded: the database's values read back, the message's own
    for what it set, and nothing (None) for the columns no insert fills in."""
    values: dict[str, Any] = dict.fromkeys(outbox_messages.columns.keys())
    values.update(message.row())
    values.update({column.name: returned._mapping[column.name] for column in READ_BACK})
    row = OutboxMessage(**values)
    make_transient_to_detached(row)  # clean and detached: the caller's session merges it
    return row


def insert_many(dialect: Dialect) -> Insert:
    """The same for many rows: given one parameter set per row, SQLAlchemy's "insertmanyvalues"
    sends multi-row INSERT ... RETURNING statements of up to 1,000 rows."""
    return (
        _insert_ignoring_duplicates(dialect)
        .returning(OutboxMessage.client_message_id)
        .execution_options(insertmanyvalues_page_size=ROWS_PER_STATEMENT)
    )


def existing(dialect: Dialect, message: NewMessage) -> Select[Any]:
    """The row holding the message's client_message_id (for if_exists="return"): what the
    producer may read of it, and what tells whether it holds the same recipient and content
    (judged by ``same_message``)."""
    where = outbox_messages.c.client_message_id == message.client_message_id
    same = database_of(dialect).same_message_columns(outbox_messages, message)
    return select(*READ_BACK, *same).where(where)


def refuse_duplicate(message: NewMessage, if_exists: IfExists) -> None:
    """The insert found the id taken: an error unless the caller asked for the existing row."""
    if if_exists != "return":
        raise DuplicateMessage([message.client_message_id])


def same_message(message: NewMessage, found: Row[Any]) -> OutboxMessage:
    """The existing row, provided it holds the same message: a reused key with other data is
    always refused."""
    fields = found._mapping
    if "same" in fields:
        same = bool(fields["same"])
    else:
        same = fields["recipient"] == message.recipient
        same = same and fields["content"] == message.content.to_api()
    if not same:
        raise DuplicateMessage(
            [message.client_message_id], "already in the outbox with another recipient or content"
        )
    return loaded(message, found)


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
    """Rows grouped by the columns they set, in one canonical order: groups by their columns,
    rows by client_message_id.

    A multi-row INSERT takes its columns from its first row; rows without a send_at must
    keep the column's default, now(), so they go in a statement of their own. The order is
    what keeps concurrent producers apart: two calls writing the same ids (a retried job
    beside its first try) take the unique index's entries in the same order, so one waits
    for the other instead of each holding what the other needs (a deadlock).
    """
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for message in sorted(batch, key=lambda message: message.client_message_id):
        row = message.row()
        groups.setdefault(frozenset(row), []).append(row)
    return [groups[columns] for columns in sorted(groups, key=sorted)]


def in_given_order(batch: Iterable[NewMessage], inserted: Iterable[str]) -> list[str]:
    """The ids inserted, in the order the caller gave their messages."""
    written = set(inserted)
    return [m.client_message_id for m in batch if m.client_message_id in written]


def _insert_ignoring_duplicates(dialect: Dialect) -> Insert:
    """INSERT ... ON CONFLICT (client_message_id) DO NOTHING for the session's database."""
    insert = database_of(dialect).insert(OutboxMessage)
    return insert.on_conflict_do_nothing(index_elements=["client_message_id"])
