"""The simulator's databases: one per module and kind, emptied before every run."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine

from tests.conftest import service_missing
from tests.simulation.runner import database


@pytest.fixture(scope="module")
def sqlite_world() -> Iterator[Engine]:
    with database("sqlite") as engine:
        yield engine


@pytest.fixture(scope="module")
def postgres_world() -> Iterator[Engine]:
    try:
        context = database("postgresql")
        engine = context.__enter__()
    except psycopg.OperationalError as error:
        service_missing("PostgreSQL", error)
    try:
        yield engine
    finally:
        context.__exit__(None, None, None)


@pytest.fixture(autouse=True)
def _quiet_batches() -> Iterator[None]:
    """The dispatcher logs every batch; hundreds of runs need none of those lines."""
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)
