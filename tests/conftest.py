"""Shared fixtures: fresh PostgreSQL and SQLite outbox databases, and Redis, or a clear skip."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from worker.database import make_engine

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get(
    "OUTBOX_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("OUTBOX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("OUTBOX_REQUIRE_SERVICES") == "1"
_database_numbers = itertools.count()


def service_missing(name: str, error: Exception) -> None:
    """Skip with a visible reason, or fail when CI requires every service."""
    message = f"{name} is not reachable ({error.__class__.__name__}: {error})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}; OUTBOX_REQUIRE_SERVICES=1 forbids skipping")
    pytest.skip(message)


def alembic_config(url: str) -> Config:
    """Alembic's configuration for the project's migrations against ``url``."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    return config


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` on the same server."""
    return url.rsplit("/", 1)[0] + "/" + name


def _admin(sql: str) -> None:
    """Run one statement outside a transaction on the server's ``test`` database."""
    dsn = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as connection:
        connection.execute(sql)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A database migrated once with the real migrations; each test copies it."""
    name = f"outbox_template_{os.getpid()}"
    try:
        _admin(f"DROP DATABASE IF EXISTS {name}")
    except psycopg.OperationalError as error:
        service_missing("PostgreSQL", error)
    _admin(f"CREATE DATABASE {name}")
    command.upgrade(alembic_config(with_database(POSTGRES_URL, name)), "head")
    yield name
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    """A fresh, migrated, empty PostgreSQL outbox database for one test."""
    name = f"outbox_test_{os.getpid()}_{next(_database_numbers)}"
    _admin(f"CREATE DATABASE {name} TEMPLATE {postgres_template}")
    yield with_database(POSTGRES_URL, name)
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def empty_postgres_url(postgres_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database with no tables at all (for migration tests)."""
    name = f"outbox_empty_{os.getpid()}_{next(_database_numbers)}"
    _admin(f"CREATE DATABASE {name}")
    yield with_database(POSTGRES_URL, name)
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite outbox file, migrated with the real migrations."""
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    command.upgrade(alembic_config(url), "head")
    return url


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once on PostgreSQL and once on SQLite."""
    fixture = "postgres_url" if request.param == "postgresql" else "sqlite_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh outbox database (both backends)."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    """A SQLite file with no tables at all (for migration tests)."""
    return f"sqlite:///{tmp_path / 'empty.db'}"


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_url(request: pytest.FixtureRequest) -> str:
    """A database with no tables at all, once on PostgreSQL and once on SQLite."""
    fixture = "empty_postgres_url" if request.param == "postgresql" else "empty_sqlite_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def empty_engine(empty_url: str) -> Iterator[Engine]:
    """An engine on the database of ``empty_url``."""
    engine = make_engine(empty_url)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    """An engine on a fresh PostgreSQL outbox database."""
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The development Redis, flushed of nothing: tests use their own keys and queues."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as error:
        service_missing("Redis", error)
    finally:
        client.close()
    return REDIS_URL
