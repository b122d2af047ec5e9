"""Alembic environment: migrates the database at OUTBOX_DATABASE_URL to the outbox's models."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Engine

import models

# Imported for their tables, which join the metadata: the gate's and beat's schedule.
import worker.dispatch.gate
import worker.runtime.housekeeping  # noqa: F401
from worker.ops.migrate import migration_engine, migration_lock
from worker.settings import database_url_from_environ

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    """A URL set by the caller (tests, the CLI) wins over the environment."""
    return config.get_main_option("sqlalchemy.url") or database_url_from_environ()


def run_offline() -> None:
    """Print the SQL instead of running it (``alembic upgrade head --sql``)."""
    context.configure(url=_url(), target_metadata=models.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run the migrations on a fresh connection, one run at a time.

    PostgreSQL: each migration in its own transaction, inside which its steps commit on their
    own (worker/ops/online_ddl.py), so the application keeps reading and writing throughout.
    SQLite: the whole run one transaction under the database's write lock.
    """
    engine = migration_engine(_url())
    try:
        _run_online(engine)
    finally:
        engine.dispose()  # an interrupted run leaves no connection behind either


def _run_online(engine: Engine) -> None:
    postgres = engine.dialect.name == "postgresql"
    with migration_lock(engine), engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=models.metadata,
            render_as_batch=not postgres,
            # Defaults are contract (a plain three-column INSERT must work), so `alembic check`
            # compares them; SQLite has no identity columns and reports a false one for ``id``.
            compare_server_default=postgres,
            # SQLite's DDL is transactional once the driver lets BEGIN through (see
            # migration_engine).
            transactional_ddl=True,
            transaction_per_migration=postgres,
        )
        with context.begin_transaction():  # a concurrent run waited in migration_lock
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
