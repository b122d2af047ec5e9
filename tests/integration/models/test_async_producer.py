"""aenqueue and aenqueue_many on AsyncSession: PostgreSQL (psycopg async) and SQLite (aiosqlite)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from models import (
    DuplicateMessage,
    InvalidMessage,
    OutboxMessage,
    Priority,
    SMSProject,
    aenqueue,
    aenqueue_many,
)

CONTENT = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John", "Order #5678"]}
T = TypeVar("T")


def message(index: int) -> dict[str, Any]:
    content = {**CONTENT, "placeholders": ["John", f"Order #{index}"]}
    return {"recipient": "+46 70-123 45 67", "content": content, "client_message_id": f"m-{index}"}


def async_url(engine: Engine) -> str:
    """The same database through the asyncio driver: psycopg's async mode, or aiosqlite."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    return url.render_as_string(hide_password=False)


def client_ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        query = text("SELECT client_message_id FROM outbox_messages ORDER BY id")
        return list(connection.scalars(query))


@asynccontextmanager
async def async_engine(engine: Engine) -> AsyncIterator[AsyncEngine]:
    """An engine as an async application creates it: none of the outbox's configuration."""
    application = create_async_engine(async_url(engine))
    try:
        yield application
    finally:
        await application.dispose()


def on_async_engine(engine: Engine, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run ``work`` on an async engine over the test's database, in a fresh event loop."""

    async def main() -> T:
        async with async_engine(engine) as application:
            return await work(application)

    return asyncio.run(main())


# --- aenqueue -------------------------------------------------------------------------------


def test_aenqueue_inserts_in_the_callers_transaction(engine: Engine) -> None:
    async def work(application: AsyncEngine) -> None:
        async with AsyncSession(application) as session:
            row = await aenqueue(
                session,
                recipient="+46 (0)70-123 45 67",
                content=SMSProject(project_id=123, placeholders=["John", "Order #5678"]),
                client_message_id="order-42",
                priority=Priority.URGENT,
                ttl=timedelta(minutes=10),
            )
            assert row.id is not None
            assert client_ids(engine) == []  # not committed: invisible to others
            await session.commit()

    on_async_engine(engine, work)
    with engine.connect() as connection:
        stored = connection.execute(select(OutboxMessage.__table__)).one()
    assert stored.client_message_id == "order-42"
    assert stored.recipient == "46701234567"
    assert stored.content == CONTENT
    assert stored.priority == 0
    assert stored.expires_at is not None


def test_aenqueue_duplicates_raise_or_return_and_the_transaction_stays_usable(
    engine: Engine,
) -> None:
    async def work(application: AsyncEngine) -> None:
        async with AsyncSession(application) as session, session.begin():
            await aenqueue(session, **message(0))
        async with AsyncSession(application) as session, session.begin():
            with pytest.raises(DuplicateMessage) as caught:
                await aenqueue(session, **message(0))
            assert caught.value.client_message_ids == ["m-0"]
            again = await aenqueue(session, **message(0), if_exists="return")
            assert again.client_message_id == "m-0"
            with pytest.raises(DuplicateMessage, match="another recipient or content"):
                await aenqueue(
                    session, **{**message(0), "recipient": "46709876543"}, if_exists="return"
                )
            await aenqueue(session, **message(1))

    on_async_engine(engine, work)
    assert client_ids(engine) == ["m-0", "m-1"]


def test_aenqueue_refuses_bad_input_by_name_and_the_transaction_stays_usable(
    engine: Engine,
) -> None:
    async def work(application: AsyncEngine) -> None:
        async with AsyncSession(application) as session, session.begin():
            await aenqueue(session, **message(0))
            bad = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "a\x00b"}
            with pytest.raises(InvalidMessage) as caught:
                await aenqueue(session, **{**message(1), "content": bad})
            assert caught.value.field == "content.text"
            with pytest.raises(InvalidMessage) as caught:
                await aenqueue(session, **message(1), priority=9)
            assert caught.value.field == "priority"
            assert (await session.execute(text("SELECT 1"))).scalar() == 1
            await aenqueue(session, **message(2))

    on_async_engine(engine, work)
    assert client_ids(engine) == ["m-0", "m-2"]


# --- aenqueue_many --------------------------------------------------------------------------


def test_aenqueue_many_inserts_every_message_in_multi_row_statements(engine: Engine) -> None:
    async def work(application: AsyncEngine) -> list[str]:
        async with AsyncSession(application) as session, session.begin():
            batch = [message(index) for index in range(2_500)]
            batch[7] = {**batch[7], "send_at": datetime.now(UTC) + timedelta(hours=1)}
            return await aenqueue_many(session, batch)

    inserted = on_async_engine(engine, work)
    assert sorted(inserted) == sorted(f"m-{index}" for index in range(2_500))
    assert len(client_ids(engine)) == 2_500


def test_aenqueue_many_with_an_existing_id_inserts_none_unless_told_to_skip(
    engine: Engine,
) -> None:
    async def work(application: AsyncEngine) -> list[str]:
        async with AsyncSession(application) as session, session.begin():
            await aenqueue_many(session, [message(1), message(3)])
        async with AsyncSession(application) as session, session.begin():
            with pytest.raises(DuplicateMessage) as caught:
                await aenqueue_many(session, [message(index) for index in range(5)])
            assert caught.value.client_message_ids == ["m-1", "m-3"]
            await aenqueue(session, **message(100))  # the transaction is still usable
        async with AsyncSession(application) as session, session.begin():
            return await aenqueue_many(
                session, [message(index) for index in range(5)], if_exists="return"
            )

    assert on_async_engine(engine, work) == ["m-0", "m-2", "m-4"]
    assert sorted(client_ids(engine)) == ["m-0", "m-1", "m-100", "m-2", "m-3", "m-4"]


def test_aenqueue_many_names_the_bad_message_and_inserts_none(engine: Engine) -> None:
    async def work(application: AsyncEngine) -> None:
        async with AsyncSession(application) as session:
            batch = [message(0), {**message(1), "recipient": "0701234567"}]
            with pytest.raises(InvalidMessage) as caught:
                await aenqueue_many(session, batch)
            assert caught.value.field == "messages[1].recipient"
            await session.commit()

    on_async_engine(engine, work)
    assert client_ids(engine) == []


# --- the caller's transaction ---------------------------------------------------------------


@pytest.mark.parametrize("entry_point", ["aenqueue", "aenqueue_many"])
def test_the_first_write_is_rolled_back_with_the_callers_transaction(
    engine: Engine, entry_point: str
) -> None:
    async def write(session: AsyncSession, indexes: range) -> None:
        if entry_point == "aenqueue":
            for index in indexes:
                await aenqueue(session, **message(index))
        else:
            await aenqueue_many(session, [message(index) for index in indexes])

    async def work(application: AsyncEngine) -> None:
        async with AsyncSession(application) as session:
            await write(session, range(3))
            await session.rollback()
        assert client_ids(engine) == []
        with pytest.raises(RuntimeError):
            async with AsyncSession(application) as session, session.begin():
                await write(session, range(3))
                raise RuntimeError("the business step after the enqueue failed")
        assert client_ids(engine) == []
        async with AsyncSession(application) as session, session.begin():
            await write(session, range(3, 5))

    on_async_engine(engine, work)
    assert client_ids(engine) == ["m-3", "m-4"]
