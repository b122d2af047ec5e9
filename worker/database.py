"""Database engines for the outbox: one per process, created after fork, tuned per dialect;
and the database's clock, the outbox's time.

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
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from worker.clock import Clock, DatabaseClock, utc_now
from worker.pooler_hint import note_error

POOLER_OPTION = "pooler"
TRANSACTION_POOLER = "transaction"

_engines: dict[str, Engine] = {}

# -- database_now -- The database server's clock; clock_timestamp(), not now(): the time of
# the read itself, also inside a transaction.
_DATABASE_NOW = text("SELECT clock_timestamp()")


def behind_transaction_pooler(url: str | URL) -> bool:
    """True when ``url`` says it goes through a transaction pooler (``?pooler=transaction``).

    ArgumentError, naming the option and why, for any other value, for a database other than
    PostgreSQL, or for a driver other than psycopg.
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
    if parsed.get_backend_name() != "postgresql" or parsed.get_driver_name() != "psycopg":
        raise ArgumentError(
            f"{POOLER_OPTION}={TRANSACTION_POOLER}: needs a postgresql+psycopg:// URL"
        )
    return True


def driver_url(url: str | URL) -> URL:
    """``url`` as the driver takes it: without the outbox's own pooler option."""
    return make_url(url).difference_update_query([POOLER_OPTION])


def make_engine(url: str | URL, **options: Any) -> Engine:
    """A new engine for the outbox database; SQLite gets WAL and a busy timeout, a URL
    behind a transaction pooler no server-side prepared statements."""
    if make_url(url).get_backend_name() == "sqlite":
        behind_transaction_pooler(url)  # refuses the option on SQLite
        engine = create_engine(url, poolclass=NullPool, **options)
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    pooled = behind_transaction_pooler(url)
    if pooled:
        options["connect_args"] = {"prepare_threshold": None, **options.get("connect_args", {})}
    options.setdefault("pool_pre_ping", True)
    options.setdefault("pool_size", 5)
    engine = create_engine(driver_url(url), **options)
    if not pooled:  # a pooler the URL does not name: said once, in the outbox's words
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


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (the CLI, the demo's progress bar) run beside the worker's writes;
    # the busy timeout makes a writer wait for the lock instead of failing at once. It comes
    # first: switching to WAL takes the lock too, and a migration may hold it for seconds.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


os.register_at_fork(after_in_child=dispose_engines)


def database_now(engine: Engine) -> datetime:
    """The outbox's time now: the database's clock (on SQLite, the host's: they are one)."""
    if engine.dialect.name == "sqlite":
        return utc_now()
    with engine.connect() as connection:
        moment: datetime = connection.scalar(_DATABASE_NOW)
    return moment.astimezone(UTC)


def outbox_clock(engine: Engine, monotonic: Callable[[], float] = time.monotonic) -> Clock:
    """The outbox's time for a long-running process: the database's clock, read every few
    seconds and advanced by ``monotonic`` in between (on SQLite, the host's clock)."""
    if engine.dialect.name == "sqlite":
        return utc_now
    return DatabaseClock(lambda: database_now(engine), monotonic=monotonic)
