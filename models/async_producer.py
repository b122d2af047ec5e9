"""The producer API for asyncio applications: ``aenqueue`` and ``aenqueue_many`` on AsyncSession.

Each runs ``models.producer``'s function on the session's synchronous side (SQLAlchemy's
``run_sync``): one implementation of the statements, their order and their checks; only the
awaiting differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Unpack

from sqlalchemy.ext.asyncio import AsyncSession

from models.content import Content
from models.inserts import IfExists
from models.limits import DEFAULT_LIMITS, MessageLimits
from models.message import MessageOptions, NewMessage
from models.outbox import OutboxMessage
from models.producer import enqueue, enqueue_many


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
    return await session.run_sync(
        lambda sync: enqueue(
            sync,
            recipient=recipient,
            content=content,
            if_exists=if_exists,
            limits=limits,
            **options,
        )
    )


async def aenqueue_many(
    session: AsyncSession,
    messages: Iterable[NewMessage | Mapping[str, Any]],
    *,
    if_exists: IfExists = "raise",
    limits: MessageLimits = DEFAULT_LIMITS,
) -> list[str]:
    """``enqueue_many`` for an AsyncSession: all validated first, then multi-row INSERTs."""
    return await session.run_sync(
        lambda sync: enqueue_many(sync, messages, if_exists=if_exists, limits=limits)
    )
