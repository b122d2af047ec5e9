"""The producer API: add messages to the outbox inside the caller's own transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Unpack

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from models import inserts
from models.content import Content
from models.inserts import IfExists
from models.limits import DEFAULT_LIMITS, MessageLimits
from models.message import MessageOptions, NewMessage, validated_batch
from models.outbox import OutboxMessage


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
    same recipient and content (a reused key with other data is always refused).
    """
    message = NewMessage.create(recipient=recipient, content=content, limits=limits, **options)
    dialect = _writable(session).dialect
    returned = session.execute(inserts.insert_one(dialect, message)).one_or_none()
    if returned is None:
        inserts.refuse_duplicate(message, if_exists)
        found = session.execute(inserts.existing(dialect, message)).one()
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
    ``"return"`` those messages are skipped and left out of the returned list.
    """
    batch = validated_batch(messages, limits)
    if not batch:
        return []
    insert = inserts.insert_many(_writable(session).dialect)
    inserted: list[str] = []
    with session.begin_nested():  # a savepoint: a refusal below leaves nothing behind
        for rows in inserts.by_columns(batch):
            inserted.extend(session.scalars(insert, rows))
        inserts.refuse_duplicates(batch, inserted, if_exists)
    return inserted


def _writable(session: Session) -> Connection:
    """The session's outbox connection, inside a transaction of the caller's (see needs_begin)."""
    connection = session.connection(bind_arguments=inserts.OUTBOX_BIND)
    if inserts.needs_begin(connection):
        connection.exec_driver_sql(inserts.BEGIN)
    return connection
