"""The retry policy: backoff bounds and the request spacing learnt from 429s."""

from __future__ import annotations

import random
from datetime import timedelta

from worker.dispatch.retry import after_rate_limit, after_success, backoff, key_fingerprint

BASE, CAP = timedelta(seconds=5), timedelta(seconds=900)


def test_backoff_doubles_from_the_base_with_jitter_and_stops_at_the_cap() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(1, 5), (2, 10), (3, 20), (8, 640), (9, 900), (50, 900)]:
        delays = [backoff(attempt, base=BASE, cap=CAP, rng=rng) for _ in range(200)]
        top = timedelta(seconds=ceiling)
        assert all(top / 2 <= delay <= top for delay in delays), attempt
        assert len(set(delays)) > 100  # jittered, not one value


def test_a_learnt_spacing_holds_for_dozens_of_answers_then_fades_out() -> None:
    spacing = after_rate_limit(after_rate_limit(after_rate_limit(timedelta(0))))
    assert spacing == timedelta(milliseconds=200)
    answers = 0
    while spacing:
        spacing = after_success(spacing)
        answers += 1
        if answers == 20:
            assert spacing > timedelta(milliseconds=130)  # still close to the limit found
    assert 100 < answers < 400


def test_spacing_never_exceeds_ten_seconds() -> None:
    spacing = timedelta(seconds=8)
    assert after_rate_limit(spacing) == timedelta(seconds=10)


def test_key_fingerprints_are_short_stable_and_do_not_hold_the_key() -> None:
    fingerprint = key_fingerprint("secret-key-123")
    assert fingerprint == key_fingerprint("secret-key-123") != key_fingerprint("secret-key-124")
    assert len(fingerprint) == 16 and "secret" not in fingerprint
