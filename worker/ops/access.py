"""How operator tools reach the outbox: their settings, the database, and the one-line error.

Failures an operator can act on raise `OperatorError`, whose message is the one line the CLI
prints.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from sqlalchemy import Engine, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from models.databases import database_at
from worker.database import make_engine
from worker.errors import OperatorError
from worker.settings import OperatorSettings


def operator_settings(environ: Mapping[str, str] | None = None) -> OperatorSettings:
    """The settings of the CLI and the metrics endpoint, which never call the API.

    The API's address and key are not read at all, so a missing key or a remote URL does
    not stop `outbox stats`; every other setting is validated as the worker does.
    """
    return OperatorSettings.from_environ(environ)


def shown_url(url: str) -> str:
    """A database URL fit to print: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an unreadable URL)"


def reason_of(error: BaseException) -> str:
    """A driver's error as a short phrase, e.g. 'Connection refused'."""
    text = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    text = text.rsplit(" failed: ", 1)[-1]
    return text.replace("FATAL:", "").strip() or type(error).__name__


@contextmanager
def open_outbox(url: str, *, must_exist: bool = True) -> Iterator[Engine]:
    """An engine on the outbox database; unreachable or unmigrated databases raise one line."""
    shown = shown_url(url)
    if must_exist:
        _check_database_file(url, shown)
    try:
        engine = make_engine(url)
    except (ArgumentError, NoSuchModuleError) as error:
        raise OperatorError(f"OUTBOX_DATABASE_URL: cannot use {shown}: {error}", 2) from None
    try:
        if must_exist:
            try:
                has_table = inspect(engine).has_table("outbox_messages")
            except DBAPIError as error:
                raise OperatorError(
                    f"cannot reach the database at {shown}: {reason_of(error)}"
                ) from None
            if not has_table:
                raise OperatorError(
                    f"the database at {shown} has no outbox table: run `outbox migrate`"
                )
        try:
            yield engine
        except DBAPIError as error:
            if error.connection_invalidated or "connect" in str(error.orig).lower():
                raise OperatorError(
                    f"cannot reach the database at {shown}: {reason_of(error)}"
                ) from None
            raise OperatorError(f"database error at {shown}: {reason_of(error)}") from None
    finally:
        engine.dispose()


def _check_database_file(url: str, shown: str) -> None:
    """SQLite would create a missing file; refuse instead, naming it."""
    try:
        path = database_at(url).database_file(make_url(url))
    except ArgumentError:
        return
    if path is not None and not path.exists():
        raise OperatorError(
            f"no database file at {shown}: set OUTBOX_DATABASE_URL, or run `outbox migrate`"
        )


def run_script(engine: Engine, script: str) -> None:
    """Run a SQL script of several statements (its own BEGIN and COMMIT) as one request."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql(script)
