"""The producer API for asyncio applications: ``aenqueue`` and ``aenqueue_many`` on AsyncSession.

The same validation, statements and result checks as ``models.producer`` (all in
``models.message`` and ``models.inserts``); only the awaits differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Unpack

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from models import inserts
from models.content import Content
from models.inserts import IfExists
from models.limits import DEFAULT_LIMITS, MessageLimits
from models.message import MessageOptions, NewMessage, validated_batch
from models.outbox import OutboxMessage


async def aenqueue(
    session: AsyncSession,
    *,
    recipient: object,
    content: Content | Mapping[str, Any],
    if_exists: IfExists = "raise",
    limits: MessageLimits = DEFAULT_LIMITS,
    **options: Unpack[MessageOptions],
) -> OutboxMessage:
    """``enqueue`` for an AsyncSession: one message in its transaction (no commit)."""
    message = NewMessage.create(recipient=recipient, content=content, limits=limits, **options)
    dialect = (await _writable(session)).dialect
    returned = (await session.execute(inserts.insert_one(dialect, message))).one_or_none()
    if returned is None:
        inserts.refuse_duplicate(message, if_exists)
        found = (await session.execute(inserts.existing(dialect, message))).one()
        return await session.merge(inserts.same_message(message, found), load=False)
    return await session.merge(inserts.loaded(message, returned), load=False)


async def aenqueue_many(
    session: AsyncSession,
    messages: Iterable[NewMessage | Mapping[str, Any]],
    *,
    if_exists: IfExists = "raise",
    limits: MessageLimits = DEFAULT_LIMITS,
) -> list[str]:
    """``enqueue_many`` for an AsyncSession: all validated first, then multi-row INSERTs."""
    batch = validated_batch(messages, limits)
    if not batch:
        return []
    insert = inserts.insert_many((await _writable(session)).dialect)
    inserted: list[str] = []
    async with session.begin_nested():  # a savepoint: a refusal below leaves nothing behind
        for rows in inserts.by_columns(batch):
            inserted.extend(await session.scalars(insert, rows))
        inserts.refuse_duplicates(batch, inserted, if_exists)
    return inserted


async def _writable(session: AsyncSession) -> AsyncConnection:
    """The session's outbox connection, inside a transaction of the caller's (see needs_begin)."""
    connection = await session.connection(bind_arguments=inserts.OUTBOX_BIND)
    if await connection.run_sync(inserts.needs_begin):
        await connection.exec_driver_sql(inserts.BEGIN)
    return connection
