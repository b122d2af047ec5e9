"""Database engines for the outbox: one per process, created after fork, tuned by the database
seam (``models.databases``); and the database's clock, the outbox's time.

A PostgreSQL URL ending in ``?pooler=transaction`` reaches the database through a pooler in
transaction mode (PgBouncer's ``pool_mode = transaction``), which hands every transaction to
whichever server connection is free. The option is the outbox's own: it is taken off the URL
before the driver sees it, and it turns psycopg's server-side prepared statements off, since
a statement prepared on one server connection is unknown on the next, or means another
client's statement there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import URL, Connection, Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from models.databases import database_at, database_of
from worker.clock import Clock, DatabaseClock, utc_now
from worker.pooler_hint import note_error

POOLER_OPTION = "pooler"
TRANSACTION_POOLER = "transaction"

_engines: dict[str, Engine] = {}


def behind_transaction_pooler(url: str | URL) -> bool:
    """True when ``url`` says it goes through a transaction pooler (``?pooler=transaction``).

    ArgumentError, naming the option and why, for any other value, for a database other than
    PostgreSQL, or for a driver other than psycopg (``Database.supports_transaction_pooler``).
    """
    parsed = make_url(url)
    if POOLER_OPTION not in parsed.query:
        return False
    value = parsed.query[POOLER_OPTION]
    if value != TRANSACTION_POOLER:
        raise ArgumentError(
            f"{POOLER_OPTION}={value}: the one pooler mode to name is "
            f"{POOLER_OPTION}={TRANSACTION_POOLER} (a session pooler needs no option)"
        )
    if not database_at(parsed).supports_transaction_pooler(parsed):
        raise ArgumentError(
            f"{POOLER_OPTION}={TRANSACTION_POOLER}: needs a postgresql+psycopg:// URL"
        )
    return True


def driver_url(url: str | URL) -> URL:
    """``url`` as the driver takes it: without the outbox's own pooler option."""
    return make_url(url).difference_update_query([POOLER_OPTION])


def make_engine(url: str | URL, **options: Any) -> Engine:
    """A new engine for the outbox database, tuned for it (``Database.make_engine``); one behind
    a pooler the URL does not name reports the pooler's sign once, in the outbox's words."""
    pooled = behind_transaction_pooler(url)
    engine = database_at(url).make_engine(driver_url(url), pooled=pooled, options=options)
    if not pooled:
        event.listen(engine, "handle_error", note_error)
    return engine


def engine_for(url: str) -> Engine:
    """The process's shared engine for ``url`` (forked children build their own)."""
    engine = _engines.get(url)
    if engine is None:
        engine = _engines[url] = make_engine(url)
    return engine


def dispose_engines() -> None:
    """Forget every engine without closing the parent's connections (call after fork)."""
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()


os.register_at_fork(after_in_child=dispose_engines)


def database_now(engine: Engine) -> datetime:
    """The outbox's time now: the database's clock (on SQLite, the host's: they are one)."""
    database = database_of(engine)
    if not database.keeps_its_own_clock:
        return utc_now()
    with engine.connect() as connection:
        return database.clock_now(connection)


def outbox_clock(engine: Engine, monotonic: Callable[[], float] = time.monotonic) -> Clock:
    """The outbox's time for a long-running process: the database's clock, read every few
    seconds and advanced by ``monotonic`` in between (on SQLite, the host's clock)."""
    if not database_of(engine).keeps_its_own_clock:
        return utc_now
    return DatabaseClock(lambda: database_now(engine), monotonic=monotonic)


class OnFirstUse:
    """A connection taken from the pool only when a statement needs it, returned at the end of
    the ``with`` block or when released: a gate note or slot booking that writes nothing costs
    no checkout, and a batch's claim and sending policy share one without holding it through a
    wait or a request."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None

    def __getattr__(self, name: str) -> Any:
        if self._connection is None:
            self._connection = self._engine.connect()
        return getattr(self._connection, name)

    def __enter__(self) -> Connection:
        return self.as_connection()

    def __exit__(self, *_: object) -> None:
        self.release()

    def as_connection(self) -> Connection:
        """This, for code that takes a Connection (every attribute is the connection's)."""
        return cast(Connection, self)

    def release(self) -> None:
        """Give the connection back to the pool now; the next statement takes one again."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def connect_on_first_use(engine: Engine) -> Callable[[], AbstractContextManager[Connection]]:
    """What opens an ``OnFirstUse`` connection of ``engine``, for code that may write nothing."""
    return lambda: OnFirstUse(engine)
