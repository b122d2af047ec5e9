"""Random sequences of what a caller does with its transaction, on both databases, sync and
async: exactly the messages (and the caller's own rows) of committed scopes exist after.

Operations: begin, savepoint, enqueue, enqueue_many, a duplicate, an own write, release,
rollback to savepoint, commit, rollback. A model keeps one list of writes per open scope
(the transaction, then each savepoint): a release hands the top list down, a rollback to
savepoint drops it, a commit keeps them all, a rollback none. PostgreSQL runs each sequence
at a drawn isolation level. Each test prints how many sequences it ran.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session, SessionTransaction

from models import DuplicateMessage, aenqueue, aenqueue_many, enqueue, enqueue_many

CONTENT = {"$type": "SMSProject", "projectId": 1, "placeholders": []}
OPERATIONS = [
    "begin",
    "savepoint",
    "enqueue",
    "enqueue_many",
    "duplicate",
    "own_write",
    "release",
    "rollback_to_savepoint",
    "commit",
    "rollback",
]
LEVELS = {
    "postgresql": ["READ UNCOMMITTED", "READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"],
    "sqlite": ["SERIALIZABLE"],
}
SEQUENCE = st.lists(st.sampled_from(OPERATIONS), min_size=1, max_size=14)
SYNC = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ASYNC = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Model:
    """What must exist: the committed writes, and the writes of each open scope."""

    committed: set[str] = field(default_factory=set)
    scopes: list[list[str]] = field(default_factory=list)
    names: Iterator[int] = field(default_factory=itertools.count)

    def new_name(self) -> str:
        return f"w{next(self.names)}"

    def write(self, name: str) -> None:
        if not self.scopes:  # autobegin: the first write opens the transaction
            self.scopes.append([])
        self.scopes[-1].append(name)

    def written(self) -> set[str]:
        return self.committed | {name for scope in self.scopes for name in scope}

    def savepoint(self) -> None:
        if not self.scopes:
            self.scopes.append([])
        self.scopes.append([])

    def release(self) -> None:
        top = self.scopes.pop()
        self.scopes[-1].extend(top)

    def rollback_to_savepoint(self) -> None:
        self.scopes.pop()

    def end(self, *, commit: bool) -> None:
        if commit:
            self.committed.update(self.written())
        self.scopes.clear()

    @property
    def savepoints(self) -> int:
        return max(len(self.scopes) - 1, 0)


def message(name: str) -> dict[str, Any]:
    return {"recipient": "46701234567", "content": CONTENT, "client_message_id": name}


def stored(connection: Connection) -> tuple[set[str], set[str]]:
    outbox = set(connection.scalars(text("SELECT client_message_id FROM outbox_messages")))
    own = set(connection.scalars(text("SELECT name FROM caller_writes")))
    return outbox, own


@pytest.fixture
def caller_table(engine: Engine) -> Iterator[Engine]:
    """The caller's own table beside the outbox, emptied with it before each sequence."""
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS caller_writes (name TEXT)"))
    yield engine
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE caller_writes"))


def empty(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM outbox_messages"))
        connection.execute(text("DELETE FROM caller_writes"))


def check(engine: Engine, model: Model, own: set[str]) -> None:
    with engine.connect() as connection:
        outbox, writes = stored(connection)
    assert (outbox, writes) == (model.committed - own, model.committed & own)


class SyncCaller:
    """Plays operations on a Session, keeping the model in step."""

    def __init__(self, session: Session, model: Model) -> None:
        self.session, self.model, self.own = session, model, set[str]()
        self.savepoints: list[SessionTransaction] = []

    def play(self, operation: str) -> None:
        getattr(self, operation)()

    def begin(self) -> None:
        if not self.session.in_transaction():
            self.session.begin()
            self.model.scopes.append([])

    def savepoint(self) -> None:
        self.savepoints.append(self.session.begin_nested())
        self.model.savepoint()

    def enqueue(self) -> None:
        name = self.model.new_name()
        enqueue(self.session, **message(name))
        self.model.write(name)

    def enqueue_many(self) -> None:
        names = [self.model.new_name() for _ in range(3)]
        enqueue_many(self.session, [message(name) for name in names])
        for name in names:
            self.model.write(name)

    def duplicate(self) -> None:
        taken = sorted(self.model.written() - self.own)
        if taken:
            with pytest.raises(DuplicateMessage):
                enqueue(self.session, **message(taken[0]))

    def own_write(self) -> None:
        name = self.model.new_name()
        self.session.execute(text("INSERT INTO caller_writes (name) VALUES (:n)"), {"n": name})
        self.own.add(name)
        self.model.write(name)

    def release(self) -> None:
        if self.savepoints:
            self.savepoints.pop().commit()
            self.model.release()

    def rollback_to_savepoint(self) -> None:
        if self.savepoints:
            self.savepoints.pop().rollback()
            self.model.rollback_to_savepoint()

    def commit(self) -> None:
        while self.savepoints:
            self.release()
        self.session.commit()
        self.model.end(commit=True)

    def rollback(self) -> None:
        self.session.rollback()
        self.savepoints.clear()
        self.model.end(commit=False)


def test_random_caller_sequences_keep_exactly_the_committed_writes(
    caller_table: Engine, request: pytest.FixtureRequest
) -> None:
    engine = caller_table
    plain = create_engine(engine.url.render_as_string(hide_password=False))
    ran = itertools.count(1)
    runs = 0

    @SYNC
    @given(operations=SEQUENCE, level=st.sampled_from(LEVELS[engine.dialect.name]))
    def sequence(operations: list[str], level: str) -> None:
        nonlocal runs
        runs = next(ran)
        empty(engine)
        model = Model()
        with Session(plain.execution_options(isolation_level=level)) as session:
            caller = SyncCaller(session, model)
            for operation in operations:
                caller.play(operation)
        model.end(commit=False)  # closing the session rolls back what is still open
        check(engine, model, caller.own)

    try:
        sequence()
    finally:
        plain.dispose()
    report(request, engine, "sync", runs)


def test_random_async_caller_sequences_keep_exactly_the_committed_writes(
    caller_table: Engine, request: pytest.FixtureRequest
) -> None:
    engine = caller_table
    url = engine.url
    if url.get_backend_name() == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    ran = itertools.count(1)
    runs = 0

    async def play(operations: list[str], model: Model) -> set[str]:
        application = create_async_engine(url)
        try:
            async with AsyncSession(application) as session:
                return await AsyncCaller(session, model).play_all(operations)
        finally:
            await application.dispose()

    @ASYNC
    @given(operations=SEQUENCE)
    def sequence(operations: list[str]) -> None:
        nonlocal runs
        runs = next(ran)
        empty(engine)
        model = Model()
        own = asyncio.run(play(operations, model))
        model.end(commit=False)
        check(engine, model, own)

    sequence()
    report(request, engine, "async", runs)


class AsyncCaller:
    """The same operations on an AsyncSession."""

    def __init__(self, session: AsyncSession, model: Model) -> None:
        self.session, self.model, self.own = session, model, set[str]()
        self.savepoints: list[Any] = []

    async def play_all(self, operations: list[str]) -> set[str]:
        for operation in operations:
            await getattr(self, operation)()
        return self.own

    async def begin(self) -> None:
        if not self.session.in_transaction():
            await self.session.begin()
            self.model.scopes.append([])

    async def savepoint(self) -> None:
        self.savepoints.append(await self.session.begin_nested())
        self.model.savepoint()

    async def enqueue(self) -> None:
        name = self.model.new_name()
        await aenqueue(self.session, **message(name))
        self.model.write(name)

    async def enqueue_many(self) -> None:
        names = [self.model.new_name() for _ in range(3)]
        await aenqueue_many(self.session, [message(name) for name in names])
        for name in names:
            self.model.write(name)

    async def duplicate(self) -> None:
        taken = sorted(self.model.written() - self.own)
        if taken:
            with pytest.raises(DuplicateMessage):
                await aenqueue(self.session, **message(taken[0]))

    async def own_write(self) -> None:
        name = self.model.new_name()
        await self.session.execute(
            text("INSERT INTO caller_writes (name) VALUES (:n)"), {"n": name}
        )
        self.own.add(name)
        self.model.write(name)

    async def release(self) -> None:
        if self.savepoints:
            await self.savepoints.pop().commit()
            self.model.release()

    async def rollback_to_savepoint(self) -> None:
        if self.savepoints:
            await self.savepoints.pop().rollback()
            self.model.rollback_to_savepoint()

    async def commit(self) -> None:
        while self.savepoints:
            await self.release()
        await self.session.commit()
        self.model.end(commit=True)

    async def rollback(self) -> None:
        await self.session.rollback()
        self.savepoints.clear()
        self.model.end(commit=False)


def report(request: pytest.FixtureRequest, engine: Engine, kind: str, runs: int) -> None:
    figure = f"{runs} random {kind} caller sequences on {engine.dialect.name}"
    request.node.user_properties.append(("caller_sequences", figure))
    print(f"\n{figure}")
