"""Fixtures of the dispatcher's integration tests: a sandbox and an outbox on each database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from sandbox.testing import RunningSandbox, running_sandbox
from tests.integration.dispatch.harness import (
    Outbox,
)


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(seed=3) as running:
        yield running


@pytest.fixture
def outbox(engine: Engine, sandbox: RunningSandbox) -> Iterator[Outbox]:
    """PostgreSQL and SQLite: the paths the embedded default must get right."""
    harness = Outbox(engine, sandbox)
    yield harness
    harness.close()


@pytest.fixture
def pg_outbox(postgres_engine: Engine, sandbox: RunningSandbox) -> Iterator[Outbox]:
    harness = Outbox(postgres_engine, sandbox)
    yield harness
    harness.close()
