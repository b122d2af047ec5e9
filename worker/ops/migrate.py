"""`outbox migrate`: the project's Alembic migrations on the outbox database, one run at a time.

Two containers starting together both run the migrations; they must wait for each other, not
interleave their DDL. On PostgreSQL a connection of its own holds an advisory lock in an open
transaction for the whole run (`migration_lock`, taken by migrations/env.py, so `alembic upgrade
head` serializes too), while the migrations commit step by step on another connection (see
worker/ops/online_ddl.py); on SQLite the run begins with BEGIN IMMEDIATE, the database's own
write lock (`migration_engine`), and is one transaction. Every failure is one line naming its
cause.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from models.databases import database_at, database_of
from worker.database import make_engine
from worker.errors import LockNotTaken, OperatorError
from worker.ops.access import open_outbox, reason_of, shown_url

ALEMBIC_INI = "alembic.ini"
# The advisory lock every migration of an outbox database takes: "migrate" as a 64-bit key,
# apart from the receiver's match lock (models/databases/postgresql.py), which the trigger of
# every record takes and which a migration must not hold for its whole run.
MIGRATION_LOCK = int.from_bytes(b"migrate", "big")
# How often a migration looks whether the one before it has finished (PostgreSQL).
LOCK_POLL = timedelta(milliseconds=200)


def alembic_ini() -> Path:
    """The project's alembic.ini: beside the source tree, else in the working directory."""
    for folder in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (folder / ALEMBIC_INI).is_file():
            return folder / ALEMBIC_INI
    raise OperatorError(f"cannot find {ALEMBIC_INI}: run `outbox migrate` from the project folder")


def migration_engine(url: str) -> Engine:
    """The engine migrations run on: the database's own for them (on SQLite every transaction
    holds the write lock), else the outbox's (a pooler URL keeps working)."""
    return database_at(url).migration_engine(make_url(url)) or make_engine(url)


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Wait until no other migration runs, and keep the next one waiting until the block ends
    (``Database.migration_lock``)."""
    with database_of(engine).migration_lock(engine, key=MIGRATION_LOCK, poll=LOCK_POLL):
        yield


def migrate(url: str) -> str:
    """`alembic upgrade head` on ``url``; returns the revision the database is at."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.util.exc import CommandError

    config = Config(str(alembic_ini()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    _make_database_folder(url)
    with open_outbox(url, must_exist=False) as engine:
        try:
            command.upgrade(config, "head")
        except OperationalError as error:
            raise OperatorError(
                f"cannot reach the database at {shown_url(url)}: {reason_of(error)}"
            ) from None
        except DBAPIError as error:
            raise OperatorError(
                f"migration failed at {shown_url(url)}: {reason_of(error)}"
            ) from None
        except (CommandError, LockNotTaken) as error:
            raise OperatorError(f"migration failed at {shown_url(url)}: {error}") from None
        # Read on the migration's own engine where the database has one: on SQLite the
        # outbox engine switches a new connection to WAL, which needs the lock a second
        # migration may hold, and the two can deadlock (SQLite then answers "database is
        # locked" at once, whatever the timeout).
        reader = database_of(engine).migration_engine(make_url(url)) or engine
        try:
            with reader.connect() as connection:
                return MigrationContext.configure(connection).get_current_revision() or "(none)"
        finally:
            if reader is not engine:
                reader.dispose()


def _make_database_folder(url: str) -> None:
    """Create the database file's folder (SQLite); an unusable URL or folder is one line."""
    try:
        path = database_at(url).database_file(make_url(url))
    except ArgumentError as error:
        raise OperatorError(
            f"OUTBOX_DATABASE_URL: cannot use {shown_url(url)}: {error}", 2
        ) from None
    if path is None:
        return
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OperatorError(
            f"cannot create the folder {folder} for the SQLite database: {error.strerror or error}"
        ) from None
