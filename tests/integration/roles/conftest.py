"""Fixtures of the role tests: an outbox whose roles come from `outbox grants`, one URL each.

The roles are the cluster's (PostgreSQL roles are not per database), named by this test run's
pid so parallel runs do not meet; each test's database gets its grants from the script `outbox
grants --create-roles` prints, run as the owner (here the superuser that made the database).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from tests.conftest import POSTGRES_URL, with_database
from worker.database import make_engine
from worker.ops.grants import grants_sql, quote
from worker.ops.privileges import ROLES, Role

ROLE_NAMES: dict[Role, str] = {process: f"outbox_{process}_{os.getpid()}" for process in ROLES}


def owner_dsn(url: str) -> str:
    """A libpq DSN of ``url`` (the owner's connection)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def run_as_owner(url: str, script: str) -> None:
    with psycopg.connect(owner_dsn(url), autocommit=True) as connection:
        connection.execute(script)  # type: ignore[arg-type]


def as_role(url: str, process: Role) -> str:
    """``url`` logging in as ``process``'s role (trust authentication: no password here)."""
    return make_url(url).set(username=ROLE_NAMES[process]).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def role_names(postgres_template: str) -> Iterator[dict[Role, str]]:
    """The run's role names; the roles themselves are dropped when the run ends."""
    yield ROLE_NAMES
    admin = owner_dsn(with_database(POSTGRES_URL, "test"))
    with psycopg.connect(admin, autocommit=True) as connection:
        for name in ROLE_NAMES.values():
            connection.execute(f"DROP ROLE IF EXISTS {quote(name)}")  # type: ignore[arg-type]


@pytest.fixture
def granted_url(postgres_url: str, role_names: dict[Role, str]) -> str:
    """A fresh outbox whose roles hold what `outbox grants` gives them, and nothing else."""
    run_as_owner(postgres_url, grants_sql(role_names, create=True))
    return postgres_url


@pytest.fixture
def role_engine(granted_url: str) -> Iterator[Callable[[Role], Engine]]:
    """Engines on the granted outbox, one per role asked for, disposed after the test."""
    engines: list[Engine] = []

    def engine_of(process: Role) -> Engine:
        engine = make_engine(as_role(granted_url, process))
        engines.append(engine)
        return engine

    yield engine_of
    for engine in engines:
        engine.dispose()
