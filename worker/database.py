"""Database engines for the outbox: one per process, created after fork, tuned per dialect."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool

_engines: dict[str, Engine] = {}


def make_engine(url: str, **options: Any) -> Engine:
    """A new engine for the outbox database; SQLite gets WAL and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, poolclass=NullPool, **options)
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    options.setdefault("pool_pre_ping", True)
    options.setdefault("pool_size", 5)
    return create_engine(url, **options)


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
    # the busy timeout makes a writer wait for the lock instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


os.register_at_fork(after_in_child=dispose_engines)
