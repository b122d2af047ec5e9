"""The retry policy: backoff bounds and the request rate learnt from 429s."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from worker.dispatch.retry import (
    INITIAL_RATE,
    MIN_RATE,
    backoff,
    rate_after_429,
    rate_after_answer,
)

BASE, CAP = timedelta(seconds=5), timedelta(seconds=900)


def test_backoff_doubles_from_the_base_with_jitter_and_stops_at_the_cap() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(1, 5), (2, 10), (3, 20), (8, 640), (9, 900), (50, 900)]:
        delays = [backoff(attempt, base=BASE, cap=CAP, rng=rng) for _ in range(200)]
        top = timedelta(seconds=ceiling)
        assert all(top / 2 <= delay <= top for delay in delays), attempt
        assert len(set(delays)) > 100  # jittered, not one value


def test_a_429_takes_the_rate_down_and_remembers_the_rate_that_drew_it() -> None:
    assert rate_after_429(None) == (INITIAL_RATE, None)  # the first 429: a start, no ceiling
    rate, ceiling = rate_after_429(2.0)
    assert (rate, ceiling) == (pytest.approx(1.4), 2.0)
    assert rate_after_429(0.01) == (MIN_RATE, 0.01)  # never to a standstill


def test_answers_raise_the_rate_fast_far_below_the_ceiling_and_slowly_near_it() -> None:
    assert rate_after_answer(0.5, 1.0) == pytest.approx(0.5 * 1.05)
    assert rate_after_answer(0.9, 1.0) == pytest.approx(0.9 * 1.01)
    assert rate_after_answer(0.97, 1.0) == pytest.approx(0.97 * 1.002)  # at the limit: probing
    assert rate_after_answer(2.0, None) == pytest.approx(2.1)  # no ceiling yet: fast


def test_a_rate_that_limits_nothing_any_more_is_dropped() -> None:
    rate: float | None = 1.0
    answers = 0
    while rate is not None:
        rate = rate_after_answer(rate, None)
        answers += 1
    assert 100 < answers < 200  # ~142 answers at 5 % each from 1/s to the forget point


def test_settling_under_a_limit_draws_few_429s() -> None:
    # A simulated API allowing one request a second: the learnt rate climbs back after each 429
    # for long enough that 429s stay a small share of the answers.
    limit, rate, ceiling = 1.0, None, None
    answers = limited = 0
    rate, ceiling = rate_after_429(rate)
    for _ in range(2_000):
        if rate is not None and rate > limit:
            limited += 1
            rate, ceiling = rate_after_429(rate)
        else:
            answers += 1
            rate = rate_after_answer(rate or limit, ceiling)
    assert limited / answers < 0.1
