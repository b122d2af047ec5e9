"""One line for a transaction pooler the database URL does not name: what its errors mean.

Behind PgBouncer in transaction mode, consecutive transactions of one client run on different
server connections, and psycopg's server-side prepared statements (made after a statement's
fifth run) meet a connection that lacks them, or one where another client made them first:
``prepared statement "_pg3_0" does not exist`` / ``already exists``. The driver's words say
nothing of the cause; every engine of the outbox on PostgreSQL reports it once per process,
beside the error itself, as what it most likely is.
"""

from __future__ import annotations

import logging
import re
import threading

from sqlalchemy.engine import ExceptionContext

log = logging.getLogger("worker.database")

SIGNS = re.compile(
    r'prepared statement "_pg3_\w+" (does not exist|already exists)'
    r"|bind message supplies \d+ parameters, but prepared statement"
)
HINT = (
    "looks like PgBouncer in transaction mode: add ?pooler=transaction to the database URL "
    "(docs/deployment.md#behind-pgbouncer-transaction-pooling)"
)
_told = threading.Event()


def looks_like_a_pooler(error: BaseException) -> bool:
    """Whether ``error`` is what psycopg's prepared statements meet behind a transaction pooler."""
    return SIGNS.search(str(error)) is not None


def note_error(context: ExceptionContext) -> None:
    """SQLAlchemy's handle_error hook: the hint, logged the first time its sign is seen."""
    if not _told.is_set() and looks_like_a_pooler(context.original_exception):
        _told.set()
        log.error(HINT)
