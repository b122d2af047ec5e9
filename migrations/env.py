"""Alembic environment: migrates the database at OUTBOX_DATABASE_URL to the outbox's models."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

import models

# Imported for their tables, which join the metadata: the gate's and beat's schedule.
import worker.dispatch.gate
import worker.runtime.housekeeping  # noqa: F401
from worker.ops.migrate import hold_migration_lock, migration_engine
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
    """Run the migrations in one transaction on a fresh connection, one run at a time."""
    engine = migration_engine(_url())
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=models.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            # Defaults are contract (a plain three-column INSERT must work), so `alembic check`
            # compares them; SQLite has no identity columns and reports a false one for ``id``.
            compare_server_default=connection.dialect.name == "postgresql",
            # SQLite's DDL is transactional once the driver lets BEGIN through (see
            # migration_engine): the whole run is one transaction under its write lock.
            transactional_ddl=True,
        )
        with context.begin_transaction():
            hold_migration_lock(connection)  # a concurrent run waits here until this one ends
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
