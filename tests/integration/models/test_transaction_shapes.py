"""The producer's promise under every transaction shape: a message is written if and only if
the caller's transaction commits (savepoint-first, nested, autobegin, begin(), async, and
every PostgreSQL isolation level)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from models import (
    DuplicateMessage,
    UnsupportedTransaction,
    aenqueue,
    aenqueue_many,
    enqueue,
    enqueue_many,
)

CONTENT = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John"]}
ISOLATION_LEVELS = ["READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"]


def message(name: str) -> dict[str, Any]:
    return {"recipient": "46701234567", "content": CONTENT, "client_message_id": name}


def client_ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        query = text("SELECT client_message_id FROM outbox_messages ORDER BY client_message_id")
        return list(connection.scalars(query))


@contextmanager
def application_engine(engine: Engine, **options: Any) -> Iterator[Engine]:
    """An engine as an application creates it: none of the outbox's own configuration."""
    application = create_engine(engine.url.render_as_string(hide_password=False), **options)
    try:
        yield application
    finally:
        application.dispose()


def async_url(engine: Engine) -> str:
    url = engine.url
    if url.get_backend_name() == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    return url.render_as_string(hide_password=False)


# What a caller writes inside a savepoint opened as its transaction's first statement.
WRITES: dict[str, Callable[[Session, str], object]] = {
    "enqueue": lambda session, name: enqueue(session, **message(name)),
    "enqueue_many": lambda session, name: enqueue_many(session, [message(name)]),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_a_savepoint_first_transaction_rolled_back_leaves_no_row(
    engine: Engine, write: str
) -> None:
    # pysqlite opens the transaction with the SAVEPOINT (no BEGIN): its RELEASE used to
    # commit the row for good, whatever the caller did next.
    with application_engine(engine) as application, Session(application) as session:
        with session.begin_nested():
            WRITES[write](session, "savepoint-first")
        session.rollback()
    assert client_ids(engine) == []


@pytest.mark.parametrize("write", list(WRITES))
def test_a_savepoint_first_transaction_committed_keeps_the_row(engine: Engine, write: str) -> None:
    with application_engine(engine) as application, Session(application) as session:
        with session.begin_nested():
            WRITES[write](session, "kept")
        with session.begin_nested():
            WRITES[write](session, "dropped")
            session.get_nested_transaction().rollback()  # type: ignore[union-attr]
        session.commit()
    assert client_ids(engine) == ["kept"]


def test_a_savepoint_first_async_transaction_rolled_back_leaves_no_row(engine: Engine) -> None:
    async def main() -> None:
        application = create_async_engine(async_url(engine))
        try:
            async with AsyncSession(application) as session:
                async with session.begin_nested():
                    await aenqueue(session, **message("async-one"))
                async with session.begin_nested():
                    await aenqueue_many(session, [message("async-many")])
                await session.rollback()
        finally:
            await application.dispose()

    asyncio.run(main())
    assert client_ids(engine) == []


def test_a_savepoint_first_connection_level_transaction_rolled_back_leaves_no_row(
    engine: Engine,
) -> None:
    # A Session bound to a Connection whose first statement is the caller's SAVEPOINT.
    with application_engine(engine) as application, application.connect() as connection:
        nested = connection.begin_nested()
        with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
            enqueue(session, **message("joined"))
            session.commit()
        nested.commit()
        connection.rollback()
    assert client_ids(engine) == []


# --- isolation levels (PostgreSQL) ---------------------------------------------------------


@pytest.fixture
def pg_engine(engine: Engine) -> Engine:
    if engine.dialect.name != "postgresql":
        pytest.skip("isolation levels are PostgreSQL's")
    return engine


@pytest.mark.parametrize("level", ISOLATION_LEVELS)
@pytest.mark.parametrize("if_exists", ["raise", "return"])
def test_a_duplicate_committed_after_the_snapshot_keeps_the_transaction_usable(
    pg_engine: Engine, level: str, if_exists: Any
) -> None:
    # Under REPEATABLE READ the conflicting row, committed after the caller's snapshot, made
    # ON CONFLICT raise a serialization failure that aborted the caller's transaction.
    with (
        application_engine(pg_engine, isolation_level=level) as application,
        Session(application) as session,
    ):
        session.execute(text("SELECT 1"))  # the snapshot is taken here
        with Session(pg_engine) as other, other.begin():
            enqueue(other, **message("taken"))
        if if_exists == "return" and level in ("READ UNCOMMITTED", "READ COMMITTED"):
            assert enqueue(session, **message("taken"), if_exists="return").id is not None
        else:  # the row is not in this transaction's snapshot: nothing to return
            with pytest.raises(DuplicateMessage) as caught:
                enqueue(session, **message("taken"), if_exists=if_exists)
            assert caught.value.client_message_ids == ["taken"]
        with pytest.raises(DuplicateMessage):
            enqueue_many(session, [message("taken-2"), message("taken")], if_exists="raise")
        enqueue(session, **message("after"))
        session.commit()
    assert client_ids(pg_engine) == ["after", "taken"]


@pytest.mark.parametrize("level", ISOLATION_LEVELS)
def test_enqueue_many_skipping_a_duplicate_after_the_snapshot_keeps_the_rest(
    pg_engine: Engine, level: str
) -> None:
    with (
        application_engine(pg_engine, isolation_level=level) as application,
        Session(application) as session,
    ):
        session.execute(text("SELECT 1"))
        with Session(pg_engine) as other, other.begin():
            enqueue(other, **message("b"))
        inserted = enqueue_many(
            session, [message("a"), message("b"), message("c")], if_exists="return"
        )
        session.commit()
    assert inserted == ["a", "c"]
    assert client_ids(pg_engine) == ["a", "b", "c"]


def test_an_autocommit_connection_is_refused_by_name(engine: Engine) -> None:
    # AUTOCOMMIT leaves no transaction of the caller's to belong to.
    with (
        application_engine(engine, isolation_level="AUTOCOMMIT") as application,
        Session(application) as session,
        pytest.raises(UnsupportedTransaction) as caught,
    ):
        enqueue(session, **message("auto"))
    assert "AUTOCOMMIT" in str(caught.value)
    assert client_ids(engine) == []


@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
def test_a_server_default_isolation_level_is_seen_too(pg_engine: Engine, level: str) -> None:
    # No isolation_level on the engine: the database's default_transaction_isolation decides.
    with application_engine(pg_engine) as application:

        @event.listens_for(application, "connect")
        def _default(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"SET default_transaction_isolation = '{level.lower()}'")

        with Session(application) as session:
            session.execute(text("SELECT 1"))
            with Session(pg_engine) as other, other.begin():
                enqueue(other, **message("taken"))
            with pytest.raises(DuplicateMessage):
                enqueue(session, **message("taken"))
            enqueue(session, **message("after"))
            session.commit()
    assert client_ids(pg_engine) == ["after", "taken"]
