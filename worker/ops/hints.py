"""What users get wrong, found at start and said in one line each, before the driver's words would.

- A database behind this version's migrations: a table of the outbox lacks a column the code
  reads (every statement naming it would fail). The process stops with the migration to run.
- A host whose wall clock is far from the database's: the outbox keeps the database's time
  (README, The sending gate), but logs, Flower and `send_at` values made on this host read
  this host's clock. A warning.
- A second beat (worker/runtime/beat_lock.py says when one already runs). A warning.

A lease no longer than the HTTP timeout is refused with the other settings (worker/settings.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, MetaData, inspect, text

from models.databases import database_of
from models.outbox import Base
from worker.clock import utc_now
from worker.database import database_now
from worker.errors import SchemaBehind

# Beyond this apart, a host's clock is worth a line at start (NTP keeps hosts within ms).
CLOCK_TOLERANCE = timedelta(seconds=30)
_VERSION = text("SELECT version_num FROM alembic_version")


def missing_column(connection: Connection, metadata: MetaData = Base.metadata) -> str | None:
    """The line naming the first outbox column the database lacks (None: all there).

    A table that does not exist at all is left to the other checks: a database never
    migrated says so in its own words."""
    existing = _columns(connection, [table.name for table in metadata.sorted_tables])
    for table in metadata.sorted_tables:
        if table.name not in existing:
            continue
        absent = [
            column.name for column in table.columns if column.name not in existing[table.name]
        ]
        if absent:
            return (
                f"{table.name} lacks the column {absent[0]}: the database is behind this "
                f"version's migrations (at {_revision(connection)}); run `alembic upgrade head` "
                "(or the migration Job) before starting the outbox's processes"
            )
    return None


def _columns(connection: Connection, tables: list[str]) -> dict[str, set[str]]:
    """The columns of each of ``tables`` that exists."""
    return database_of(connection).table_columns(connection, tables)


def require_schema(connection: Connection) -> None:
    """Raise SchemaBehind (one line) when a migration this version needs has not run."""
    line = missing_column(connection)
    if line is not None:
        raise SchemaBehind(line)


def clock_skew(
    database_now: datetime, host_now: datetime, tolerance: timedelta = CLOCK_TOLERANCE
) -> str | None:
    """The line saying how far this host's clock is from the database's, when beyond
    ``tolerance``; None when close enough."""
    apart = host_now - database_now
    if abs(apart) <= tolerance:
        return None
    side = "ahead of" if apart > timedelta(0) else "behind"
    return (
        f"this host's clock is {_span(abs(apart))} {side} the database's: the outbox keeps the "
        "database's time, but logs, Flower and send_at times made here read this host's; "
        "check its time synchronisation (NTP)"
    )


def clock_line(engine: Engine) -> str | None:
    """The clock line for this host against the outbox's database (SQLite: one host, none)."""
    if not database_of(engine).keeps_its_own_clock:
        return None
    return clock_skew(database_now(engine), utc_now())


def _revision(connection: Connection) -> str:
    """The database's Alembic revision, as the line shows it."""
    if "alembic_version" not in inspect(connection).get_table_names():
        return "no recorded revision"
    return f"revision {connection.scalar(_VERSION)}"


def _span(apart: timedelta) -> str:
    seconds = int(apart.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
