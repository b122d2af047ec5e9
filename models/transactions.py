"""The caller's transaction as the producer finds it: made real on SQLite, refused in
AUTOCOMMIT, and told apart when it reads from a snapshot (REPEATABLE READ, SERIALIZABLE).

Error tree of the producer (``models.errors``): InvalidMessage (bad input), DuplicateMessage
(the idempotency key was used), UnsupportedTransaction (no transaction of the caller's to join).
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError

from models.databases import database_of
from models.errors import UnsupportedTransaction

# Where PostgreSQL raises a conflict with a row this transaction's snapshot cannot see
# (INSERT ... ON CONFLICT under REPEATABLE READ or SERIALIZABLE): the same SQLSTATE 40001 as
# any serialization failure, told apart by the server function that raised it, which no
# locale translates.
_HIDDEN_CONFLICT_SOURCES = frozenset({"ExecCheckTupleVisible", "ExecCheckTIDVisible"})
_SERIALIZATION_FAILURE = "40001"


# Before the outermost savepoint of any engine (session.begin_nested() first, or
# enqueue_many's own savepoint), the transaction is made real where the driver would let the
# SAVEPOINT open it (see the SQLite seam), so that the caller's rollback undoes what was
# written inside, with engines the outbox did not configure.
@event.listens_for(Engine, "savepoint")
def _begin_before_the_first_savepoint(connection: Connection, _name: str) -> None:
    database_of(connection).begin_before_savepoint(connection)


def check_joinable(connection: Connection) -> None:
    """Refuse a connection in AUTOCOMMIT: each statement would commit on its own, and no
    rollback of the caller's could take a message back."""
    if database_of(connection).in_autocommit(connection):
        raise UnsupportedTransaction(
            "the connection is in AUTOCOMMIT: a message must belong to a transaction of "
            "yours; use a session without isolation_level='AUTOCOMMIT'"
        )


def reads_a_snapshot(connection: Connection) -> bool:
    """Whether the caller's transaction is REPEATABLE READ or SERIALIZABLE (PostgreSQL)."""
    return database_of(connection).reads_a_snapshot(connection)


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
