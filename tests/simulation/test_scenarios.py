"""Issue 21's defects 1-5 as the simulator meets them: each a named fault plan that must run clean.

Each failed on the code the simulator was written against; a strict xfail marks the defects
whose fix has not landed, so that the test flips (and fails as XPASS) the day it does: then
the mark goes, and the scenario guards against the defect's return. The violations expected
are named: a run that fails for another reason is not this defect, and fails the test.
"""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from tests.simulation.faults import KNOWN_DEFECTS, KNOWN_VIOLATIONS, Poison, known_defects
from tests.simulation.runner import run
from tests.simulation.scenarios import SCENARIOS

# Scenario -> (the defect's entry in KNOWN_DEFECTS while it is open, the violations it draws).
EXPECTED: dict[str, tuple[str, set[str]]] = {
    "poison-at-head": (Poison.SERVER_ERROR, {"poison", "stalled"}),
    "two-poisons-in-a-batch": (Poison.SERVER_ERROR, {"poison", "stalled"}),
    "forbidden-probe": ("403", {"stalled"}),
    "hanging-message": (Poison.HANG, {"poison", "stalled"}),
    "lowered-item-limit": ("item-limit", {"too-large"}),
    "clock-stepped-back": ("clock-step", {"stalled"}),
    "isolated-then-outage": ("outage-burns-attempts", {"innocent-failed"}),
    "poison-alone": ("poison-alone", {"poison", "stalled"}),
    "hanging-message-alone": ("lone-sends", {"lone-sends"}),
    "hang-outage-alone": ("innocent-failed", {"innocent-failed"}),
    "tenant-limits": ("tenant-limits", {"paused", "rate", "stalled"}),
    "rate-lowered-while-booked": ("rate-after-429", {"rate"}),
    "poisoned-probe": ("poisoned-probe", {"probe"}),
    "server-errors-for-a-minute": ("probe-spacing", {"innocent-failed"}),
}
OPEN = {**KNOWN_DEFECTS, **KNOWN_VIOLATIONS}
# Scenarios whose cause differs between the databases run on both (the rest on SQLite).
ON_BOTH = {"clock-stepped-back", "tenant-limits"}


class OtherViolation(Exception):
    """The run failed, but not as the scenario's defect does."""


def _case(name: str, database: str) -> object:
    defect, _ = EXPECTED[name]
    open_here = {**known_defects(database), **KNOWN_VIOLATIONS}
    marks: list[pytest.MarkDecorator] = []
    if defect in open_here:
        reason = open_here[defect]
        marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason))
    if database == "postgresql":
        marks.append(pytest.mark.postgres)
    return pytest.param(name, database, marks=marks, id=f"{name}-{database}")


CASES = [_case(name, "sqlite") for name in SCENARIOS]
CASES += [_case(name, "postgresql") for name in sorted(ON_BOTH)]


@pytest.mark.parametrize(("name", "database"), CASES)
def test_the_scenario_runs_clean(name: str, database: str, request: pytest.FixtureRequest) -> None:
    fixture = "postgres_world" if database == "postgresql" else "sqlite_world"
    engine: Engine = request.getfixturevalue(fixture)
    result = run(1, engine, SCENARIOS[name], scenario=name)
    kinds = {violation.kind for violation in result.violations}
    if kinds - EXPECTED[name][1]:
        raise OtherViolation(result.report())
    assert result.clean, result.report()


def test_every_open_defect_has_its_scenario() -> None:
    covered = {defect for defect, _ in EXPECTED.values()} | {"401"}  # 401 and 403: one defect
    assert set(OPEN) | set(known_defects("sqlite")) | set(known_defects("postgresql")) <= covered
