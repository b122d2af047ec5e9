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

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from worker.database import make_engine
from worker.errors import LockNotTaken, OperatorError
from worker.ops.access import open_outbox, reason_of, shown_url

ALEMBIC_INI = "alembic.ini"
# The advisory lock every migration of an outbox database takes: "migrate" as a 64-bit key,
# apart from the receiver's match lock (worker/reports/storage.py), which the trigger of
# every record takes and which a migration must not hold for its whole run.
MIGRATION_LOCK = int.from_bytes(b"migrate", "big")
# How long a migration waits for another one to finish on SQLite (PostgreSQL waits as long
# as the other one takes).
SQLITE_LOCK_WAIT_SECONDS = 600
# How often a migration looks whether the one before it has finished (PostgreSQL).
LOCK_POLL = timedelta(milliseconds=200)


def alembic_ini() -> Path:
    """The project's alembic.ini: beside the source tree, else in the working directory."""
    for folder in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (folder / ALEMBIC_INI).is_file():
            return folder / ALEMBIC_INI
    raise OperatorError(f"cannot find {ALEMBIC_INI}: run `outbox migrate` from the project folder")


def migration_engine(url: str) -> Engine:
    """The engine migrations run on; on SQLite every transaction holds the write lock.

    pysqlite emits no BEGIN before DDL, so Alembic's statements would each commit on their
    own and two migrations would interleave; with BEGIN IMMEDIATE emitted here (the recipe of
    SQLAlchemy's pysqlite documentation) the whole migration is one transaction and a second
    one waits for it at its BEGIN.
    """
    if make_url(url).get_backend_name() != "sqlite":
        return make_engine(url)  # a pooler URL (?pooler=transaction) keeps working
    engine = create_engine(
        url, poolclass=NullPool, connect_args={"timeout": SQLITE_LOCK_WAIT_SECONDS}
    )

    @event.listens_for(engine, "connect")
    def _driver_leaves_transactions_to_us(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_with_the_write_lock(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Wait until no other migration runs, and keep the next one waiting until the block ends.

    PostgreSQL: a transaction-scoped advisory lock, so it goes with its transaction, which a
    transaction pooler keeps on one server connection and which ends when this process dies.
    That transaction holds no snapshot and no table lock: concurrent index builds, which wait
    for older transactions, do not wait for it. A run that finds the lock taken tries again
    in a new transaction every LOCK_POLL: one waiting inside its transaction would be such an
    older transaction, and the running migration's index build would wait for it forever.
    SQLite needs nothing here: `migration_engine` begins the run's one transaction holding the
    database's write lock.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as holder:
        # Literal SQL: a bound parameter leaves the idle transaction holding a catalogue
        # snapshot, which every concurrent index build would wait for.
        while True:
            holder.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
            taken = f"SELECT pg_try_advisory_xact_lock({MIGRATION_LOCK})"
            if holder.exec_driver_sql(taken).scalar():
                break
            holder.rollback()
            time.sleep(LOCK_POLL.total_seconds())
        yield
        holder.rollback()


def migrate(url: str) -> str:
    """`alembic upgrade head` on ``url``; returns the revision the database is at."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.util.exc import CommandError

    config = Config(str(alembic_ini()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    _make_sqlite_folder(url)
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
        # Read on the migration's own engine: on SQLite the outbox engine switches a new
        # connection to WAL, which needs the lock a second migration may hold, and the two can
        # deadlock (SQLite then answers "database is locked" at once, whatever the timeout).
        reader = migration_engine(url) if engine.dialect.name == "sqlite" else engine
        try:
            with reader.connect() as connection:
                return MigrationContext.configure(connection).get_current_revision() or "(none)"
        finally:
            if reader is not engine:
                reader.dispose()


def _make_sqlite_folder(url: str) -> None:
    """Create the SQLite file's folder; an unusable URL or folder is one line."""
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise OperatorError(
            f"OUTBOX_DATABASE_URL: cannot use {shown_url(url)}: {error}", 2
        ) from None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    folder = Path(str(parsed.database)).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OperatorError(
            f"cannot create the folder {folder} for the SQLite database: {error.strerror or error}"
        ) from None
