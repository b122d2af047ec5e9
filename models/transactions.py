"""The caller's transaction as the producer finds it: made real on SQLite, refused in
AUTOCOMMIT, and told apart when it reads from a snapshot (REPEATABLE READ, SERIALIZABLE).

Error tree of the producer (``models.errors``): InvalidMessage (bad input), DuplicateMessage
(the idempotency key was used), UnsupportedTransaction (no transaction of the caller's to join).
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError

from models.errors import UnsupportedTransaction

# Where PostgreSQL raises a conflict with a row this transaction's snapshot cannot see
# (INSERT ... ON CONFLICT under REPEATABLE READ or SERIALIZABLE): the same SQLSTATE 40001 as
# any serialization failure, told apart by the server function that raised it, which no
# locale translates.
_HIDDEN_CONFLICT_SOURCES = frozenset({"ExecCheckTupleVisible", "ExecCheckTIDVisible"})
_SNAPSHOT_LEVELS = frozenset({"repeatable read", "serializable"})
_SERIALIZATION_FAILURE = "40001"
# One look at the isolation level per transaction of the caller's.
_levels: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


# pysqlite (and aiosqlite) in their default mode send BEGIN only before INSERT, UPDATE and
# DELETE. A transaction whose first statement is a SAVEPOINT (session.begin_nested() first,
# or enqueue_many's own savepoint) is then opened by that SAVEPOINT, and its RELEASE commits
# for good, whatever the caller does next. SQLAlchemy's documented remedy is to send BEGIN
# oneself; done here before the outermost savepoint of any engine, so that the caller's
# rollback undoes what was written inside, with engines the outbox did not configure.
@event.listens_for(Engine, "savepoint")
def _begin_before_the_first_savepoint(connection: Connection, _name: str) -> None:
    if connection.dialect.name != "sqlite":
        return
    driver = connection.connection.driver_connection
    if not getattr(driver, "in_transaction", True):
        connection.exec_driver_sql("BEGIN")


def check_joinable(connection: Connection) -> None:
    """Refuse a connection in AUTOCOMMIT: each statement would commit on its own, and no
    rollback of the caller's could take a message back."""
    driver = connection.connection.driver_connection
    if connection.dialect.name == "sqlite":
        autocommit = getattr(driver, "isolation_level", "") is None and not getattr(
            driver, "in_transaction", True
        )
    else:
        autocommit = bool(getattr(driver, "autocommit", False))
    if autocommit:
        raise UnsupportedTransaction(
            "the connection is in AUTOCOMMIT: a message must belong to a transaction of "
            "yours; use a session without isolation_level='AUTOCOMMIT'"
        )


def reads_a_snapshot(connection: Connection) -> bool:
    """Whether the caller's transaction is REPEATABLE READ or SERIALIZABLE (PostgreSQL)."""
    if connection.dialect.name != "postgresql":
        return False
    transaction = connection.get_transaction()
    known = _levels.get(transaction)
    if known is None:
        level = connection.exec_driver_sql("SELECT current_setting('transaction_isolation')")
        known = _levels[transaction] = str(level.scalar()) in _SNAPSHOT_LEVELS
    return known


def is_hidden_conflict(error: BaseException) -> bool:
    """Whether ``error`` is PostgreSQL refusing ON CONFLICT over a row committed after the
    transaction's snapshot: the id is taken, by a row this transaction cannot see."""
    if not isinstance(error, DBAPIError):
        return False
    original = error.orig
    diag = getattr(original, "diag", None)
    return (
        getattr(original, "sqlstate", None) == _SERIALIZATION_FAILURE
        and getattr(diag, "source_function", None) in _HIDDEN_CONFLICT_SOURCES
    )
