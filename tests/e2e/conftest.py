"""Fixtures of the end-to-end suite: a `Stack` per test, killed in teardown whatever happens."""

from __future__ import annotations

import shutil
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.conftest import service_missing
from tests.e2e.harness import Stack


@pytest.fixture
def stack(request: pytest.FixtureRequest, postgres_url: str, tmp_path: Path) -> Iterator[Stack]:
    """A private Redis on a free port and a Stack on a fresh database; the test starts the rest."""
    if shutil.which("redis-server") is None:
        # The suite starts, kills and restarts a Redis of its own: the shared one will not do.
        service_missing("redis-server", FileNotFoundError("not on PATH"))
    stack = Stack(database_url=postgres_url, directory=tmp_path)
    request.node.e2e_stack = stack
    try:
        stack.start_redis()
        yield stack
    finally:
        stack.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, show the end of every process's log beside the traceback."""
    report = yield
    stack = getattr(item, "e2e_stack", None)
    if report.failed and stack is not None and call.when in {"setup", "call"}:
        report.sections.append(("end-to-end process logs", stack.logs()))
    return report
