"""Random runs on every test run: fixed seeds, so that CI replays the same runs.

Each chunk runs its seeds on one database and fails with every failing run's report (its
violations, the command that replays it, its trace's tail). `make simulate SEEDS=N` runs more.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from tests.simulation.faults import KNOWN_VIOLATIONS
from tests.simulation.runner import RunResult, run

SQLITE_CHUNKS, SQLITE_SEEDS = 12, 25  # 300 seeds
POSTGRES_CHUNKS, POSTGRES_SEEDS = 6, 5  # 30 seeds


def _failed(result: RunResult) -> bool:
    """A violation of a kind whose defect is not known and open (KNOWN_VIOLATIONS)."""
    return any(violation.kind not in KNOWN_VIOLATIONS for violation in result.violations)


def _run_seeds(engine: Engine, seeds: range) -> None:
    results = [run(seed, engine) for seed in seeds]
    reports = [result.report() for result in results if _failed(result)]
    assert not reports, "\n\n".join(reports)


@pytest.mark.parametrize("chunk", range(SQLITE_CHUNKS))
def test_random_runs_on_sqlite(chunk: int, sqlite_world: Engine) -> None:
    _run_seeds(sqlite_world, range(chunk * SQLITE_SEEDS, (chunk + 1) * SQLITE_SEEDS))


@pytest.mark.postgres
@pytest.mark.parametrize("chunk", range(POSTGRES_CHUNKS))
def test_random_runs_on_postgresql(chunk: int, postgres_world: Engine) -> None:
    first = 10_000 + chunk * POSTGRES_SEEDS  # other seeds than SQLite's
    _run_seeds(postgres_world, range(first, first + POSTGRES_SEEDS))


def test_a_seed_replays_exactly(sqlite_world: Engine) -> None:
    first, second = run(3, sqlite_world), run(3, sqlite_world)
    assert first.trace == second.trace
    assert len(first.trace) > 50  # a run with something in it
    assert [str(v) for v in first.violations] == [str(v) for v in second.violations]
