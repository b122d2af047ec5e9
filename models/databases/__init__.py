"""The database seam: what PostgreSQL and SQLite do differently, behind one interface.

``database_of`` (for an engine, a connection or a dialect) and ``database_at`` (for a URL) are
the only places that read which database the outbox runs on; everything else calls the
``Database`` they return (see ``database.py`` for what it must do).
"""

from __future__ import annotations

from sqlalchemy import URL, Connection, Dialect, Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from models.databases.database import Database, ReportRow, ReportsWritten
from models.databases.postgresql import PostgreSQL
from models.databases.sqlite import SQLite

POSTGRESQL = PostgreSQL()
SQLITE = SQLite()
DATABASES: tuple[Database, ...] = (POSTGRESQL, SQLITE)
_BY_DIALECT = {database.dialect: database for database in DATABASES}


def database_of(bind: Engine | Connection | Dialect) -> Database:
    """The database ``bind`` talks to; NotImplementedError for one the outbox does not run on."""
    dialect = bind if isinstance(bind, Dialect) else bind.dialect
    try:
        return _BY_DIALECT[dialect.name]
    except KeyError:
        raise NotImplementedError(
            f"the outbox runs on PostgreSQL and SQLite, not {dialect.name}"
        ) from None


def database_at(url: str | URL) -> Database:
    """The database ``url`` names; ArgumentError for one the outbox does not run on."""
    backend = make_url(url).get_backend_name()
    try:
        return _BY_DIALECT[backend]
    except KeyError:
        raise ArgumentError(f"the outbox runs on PostgreSQL and SQLite, not {backend}") from None


__all__ = [
    "DATABASES",
    "POSTGRESQL",
    "SQLITE",
    "Database",
    "ReportRow",
    "ReportsWritten",
    "database_at",
    "database_of",
]
