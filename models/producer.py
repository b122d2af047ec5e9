"""The producer API: add messages to the outbox inside the caller's own transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Unpack

from sqlalchemy import Connection, Insert, Row
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from models import inserts, transactions
from models.content import Content
from models.errors import DuplicateMessage
from models.inserts import IfExists
from models.limits import DEFAULT_LIMITS, MessageLimits
from models.message import MessageOptions, NewMessage, validated_batch
from models.outbox import OutboxMessage

# A duplicate committed after a REPEATABLE READ or SERIALIZABLE transaction took its snapshot.
HIDDEN = "already in the outbox, committed after this transaction's snapshot (not visible to it)"


def enqueue(
    session: Session,
    *,
    recipient: object,
    content: Content | Mapping[str, Any],
    if_exists: IfExists = "raise",
    limits: MessageLimits = DEFAULT_LIMITS,
    **options: Unpack[MessageOptions],
) -> OutboxMessage:
    """Insert one message in the session's transaction (no commit) and return its row.

    Options: client_message_id, send_at, priority, expires_at or ttl (see MessageOptions).
    A client_message_id already in the outbox raises DuplicateMessage; with
    ``if_exists="return"`` the existing row is returned instead, provided it holds the
    same recipient and content (a reused key with other data is always refused). Under
    REPEATABLE READ or SERIALIZABLE a row committed after the transaction's snapshot cannot
    be returned: DuplicateMessage says so.
    """
    message = NewMessage.create(recipient=recipient, content=content, limits=limits, **options)
    connection = _writable(session)
    statement = inserts.insert_one(connection.dialect, message)
    if transactions.reads_a_snapshot(connection):
        returned = _insert_beside_a_snapshot(session, statement, message)
    else:
        returned = session.execute(statement).one_or_none()
    if returned is None:
        inserts.refuse_duplicate(message, if_exists)
        found = session.execute(inserts.existing(connection.dialect, message)).one()
        return session.merge(inserts.same_message(message, found), load=False)
    return session.merge(inserts.loaded(message, returned), load=False)


def enqueue_many(
    session: Session,
    messages: Iterable[NewMessage | Mapping[str, Any]],
    *,
    if_exists: IfExists = "raise",
    limits: MessageLimits = DEFAULT_LIMITS,
) -> list[str]:
    """Insert many messages with multi-row INSERTs (no commit); return the ids inserted.

    Every message is validated before anything is written. With ``if_exists="raise"`` a
    client_message_id already present raises DuplicateMessage and inserts nothing; with
    ``"return"`` those messages are skipped and left out of the returned list. Rows are
    written in client_message_id order, so that producers writing the same ids at once
    wait for each other instead of deadlocking.
    """
    batch = validated_batch(messages, limits)
    if not batch:
        return []
    insert = inserts.insert_many(_writable(session).dialect)
    try:
        inserted = _insert_batch(session, insert, batch, if_exists)
    except DBAPIError as error:
        if not transactions.is_hidden_conflict(error):
            raise
        inserted = _insert_one_by_one(session, insert, batch, if_exists)
    return inserts.in_given_order(batch, inserted)


def _insert_batch(
    session: Session, insert: Insert, batch: Sequence[NewMessage], if_exists: IfExists
) -> list[str]:
    inserted: list[str] = []
    with session.begin_nested():  # a savepoint: a refusal below leaves nothing behind
        for rows in inserts.by_columns(batch):
            inserted.extend(session.scalars(insert, rows))
        inserts.refuse_duplicates(batch, inserted, if_exists)
    return inserted


def _insert_one_by_one(
    session: Session, insert: Insert, batch: Sequence[NewMessage], if_exists: IfExists
) -> list[str]:
    """The batch after PostgreSQL refused it over an id this transaction's snapshot cannot
    see: each message in a savepoint of its own, the hidden duplicates left out like the
    visible ones (all of it undone when if_exists="raise" finds any)."""
    inserted: list[str] = []
    with session.begin_nested():
        for rows in inserts.by_columns(batch):
            for row in rows:
                try:
                    with session.begin_nested():
                        inserted.extend(session.scalars(insert, [row]))
                except DBAPIError as error:
                    if not transactions.is_hidden_conflict(error):
                        raise
        inserts.refuse_duplicates(batch, inserted, if_exists)
    return inserted


def _insert_beside_a_snapshot(
    session: Session, statement: Insert, message: NewMessage
) -> Row[Any] | None:
    """The insert in a savepoint, so that a hidden duplicate leaves the transaction usable."""
    try:
        with session.begin_nested():
            return session.execute(statement).one_or_none()
    except DBAPIError as error:
        if not transactions.is_hidden_conflict(error):
            raise
        raise DuplicateMessage([message.client_message_id], HIDDEN) from None


def _writable(session: Session) -> Connection:
    """The session's outbox connection, inside a transaction of the caller's."""
    connection = session.connection(bind_arguments=inserts.OUTBOX_BIND)
    transactions.check_joinable(connection)
    return connection
