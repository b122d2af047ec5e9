"""The caller's transaction as the producer finds it: made real on SQLite, refused in
AUTOCOMMIT, and told apart when it reads from a snapshot (REPEATABLE READ, SERIALIZABLE).

Error tree of the producer (``models.errors``): InvalidMessage (bad input), DuplicateMessage
(the idempotency key was used), UnsupportedTransaction (no transaction of the caller's to join).
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError

from models.errors import UnsupportedTransaction

# Where PostgreSQL raises a conflict with a row this transaction's snapshot cannot see
# (INSERT ... ON CONFLICT under REPEATABLE READ or SERIALIZABLE): the same SQLSTATE 40001 as
# any serialization failure, told apart by the server function that raised it, which no
# locale translates.
_HIDDEN_CONFLICT_SOURCES = frozenset({"ExecCheckTupleVisible", "ExecCheckTIDVisible"})
_SNAPSHOT_LEVELS = frozenset({"REPEATABLE_READ", "SERIALIZABLE"})
_SERIALIZATION_FAILURE = "40001"
# Where the server's default isolation level is kept, per driver connection.
_DEFAULT_LEVEL = "outbox_default_isolation_level"


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
    """Whether the caller's transaction is REPEATABLE READ or SERIALIZABLE (PostgreSQL).

    Read without a round trip where it can be: the level SQLAlchemy set on the driver's
    connection (an engine's or a connection's ``isolation_level``), else the server's default
    for this connection, asked once per connection. A level set by ``SET TRANSACTION`` in SQL
    is not seen: a hidden duplicate then aborts the transaction, as PostgreSQL has it.
    """
    if connection.dialect.name != "postgresql":
        return False
    level = getattr(connection.connection.driver_connection, "isolation_level", None)
    if level is not None:
        return str(getattr(level, "name", level)) in _SNAPSHOT_LEVELS
    info = connection.connection.info
    if _DEFAULT_LEVEL not in info:
        default = connection.exec_driver_sql("SHOW default_transaction_isolation").scalar()
        info[_DEFAULT_LEVEL] = str(default).upper().replace(" ", "_")
    return str(info[_DEFAULT_LEVEL]) in _SNAPSHOT_LEVELS


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
