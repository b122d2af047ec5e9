"""`outbox migrate`: the project's Alembic migrations run on the outbox database."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from worker.ops.access import OperatorError, open_outbox, reason_of, shown_url

ALEMBIC_INI = "alembic.ini"


def alembic_ini() -> Path:
    """The project's alembic.ini: beside the source tree, else in the working directory."""
    for folder in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (folder / ALEMBIC_INI).is_file():
            return folder / ALEMBIC_INI
    raise OperatorError(f"cannot find {ALEMBIC_INI}: run `outbox migrate` from the project folder")


def migrate(url: str) -> str:
    """`alembic upgrade head` on ``url``; returns the revision the database is at."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config(str(alembic_ini()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    _make_sqlite_folder(url)
    with open_outbox(url, must_exist=False) as engine:
        try:
            command.upgrade(config, "head")
        except DBAPIError as error:
            raise OperatorError(
                f"cannot reach the database at {shown_url(url)}: {reason_of(error)}"
            ) from None
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision() or "(none)"


def _make_sqlite_folder(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)
