"""Several tenants, each with its own key, in the simulator: each key keeps to its own rate and
its own 429 pause (Wiraya limits each account), the others keep sending through one key's
pause, and every property holds per key (``rate`` and ``paused`` read each request's key)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from tests.simulation.runner import RunResult, run
from tests.simulation.scenarios import DEFAULT_KEY, TENANT_KEYS, TENANT_LIMITS

CLINIC, SHOP = TENANT_KEYS["clinic"], TENANT_KEYS["shop"]
WINDOW = next(window for window in TENANT_LIMITS.windows if window.key == CLINIC)


def answered(result: RunResult, key: str, start: float, end: float) -> int:
    return sum(
        1
        for request in result.requests
        if request.key == key and start <= request.start < end and request.result == "Answered"
    )


@pytest.mark.parametrize("fixture", ["sqlite_world", "postgres_world"])
def test_each_key_keeps_to_its_own_rate_and_pause(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    engine: Engine = request.getfixturevalue(fixture)

    result = run(1, engine, TENANT_LIMITS, scenario="tenant-limits")

    assert result.clean, result.report()
    # Through the clinic's 429s the shop and everyone else kept sending, each under its key.
    assert answered(result, SHOP, WINDOW.start, WINDOW.end) >= 3
    assert answered(result, DEFAULT_KEY, WINDOW.start, WINDOW.end) >= 3
    limited = [r for r in result.requests if r.key == CLINIC and r.result == "RateLimited"]
    # The clinic's key waited out each Retry-After: about one 429 per pause, not one a request.
    assert 1 <= len(limited) <= (WINDOW.end - WINDOW.start) / WINDOW.retry_after + 2
    # WIRAYA_API_KEY's account limit was learnt from its own 429s, a few, not one a second.
    learnt = [r for r in result.requests if r.key == DEFAULT_KEY and r.result == "RateLimited"]
    assert len(learnt) <= 6
    # The configured rate of the shop's key (OUTBOX_RATE_LIMITS) drew no 429 and was kept to
    # (the checker's per-key ``rate`` property); the shop's account has no limit of its own.
    assert not [r for r in result.requests if r.key == SHOP and r.result == "RateLimited"]
