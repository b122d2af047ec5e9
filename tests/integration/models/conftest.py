"""Fixtures of the producer tests: one database per backend and module, emptied per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Engine, text

from tests.conftest import POSTGRES_URL, _admin, alembic_config, with_database
from worker.database import make_engine


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def module_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """One migrated database per backend for this module: a new database per test costs
    far more than the tests themselves, and emptying the table between them is enough."""
    if request.param == "postgresql":
        template = request.getfixturevalue("postgres_template")
        name = f"{template}_{request.module.__name__.rsplit('.', 1)[-1]}"
        _admin(f"CREATE DATABASE {name} TEMPLATE {template}")
        url = with_database(POSTGRES_URL, name)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('producer') / 'outbox.db'}"
        command.upgrade(alembic_config(url), "head")
    engine = make_engine(url)
    yield engine
    engine.dispose()
    if request.param == "postgresql":
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def engine(module_engine: Engine) -> Engine:
    """The module's database, empty, ids starting at 1 (overrides conftest's per-test copy)."""
    with module_engine.begin() as connection:
        if module_engine.dialect.name == "postgresql":
            connection.execute(text("TRUNCATE outbox_messages RESTART IDENTITY"))
        else:
            connection.execute(text("DELETE FROM outbox_messages"))
    return module_engine
