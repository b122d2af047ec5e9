"""The retry policy: how long a message or the whole sender waits, and how fast it may send.

A message's transient failure waits an exponential backoff with jitter. The request rate is
learnt from 429s: a 429 takes the rate down to 70 % of the rate that drew it (that rate becomes
the ceiling), each answered request raises it, quickly far below the ceiling and by 1 % near
it, so that the sender settles just under the API's limit instead of drawing a 429 a second.
"""

from __future__ import annotations

import hashlib
import random
from datetime import timedelta

# The rate a first 429 starts from when no rate was known: requests per second.
INITIAL_RATE = 1.0
MIN_RATE = 0.05  # one request every 20 s at the slowest
RATE_DECREASE = 0.7  # a 429 takes the rate down to this share of the rate that drew it
FAST_GROWTH, SLOW_GROWTH = 1.05, 1.01  # per answered request: far below / near the ceiling
NEAR_CEILING = 0.85  # from this share of the ceiling on, the rate grows slowly
FORGET_RATE = 1_000.0  # a rate grown this high no longer limits anything: dropped


def backoff(attempt: int, *, base: timedelta, cap: timedelta, rng: random.Random) -> timedelta:
    """Exponential delay from ``base``, doubling per attempt up to ``cap``, with jitter.

    Half the delay is fixed and half random ("equal jitter"), so retries spread out
    without ever coming back at once.
    """
    exponent = min(max(attempt, 1) - 1, 32)
    ceiling = min(cap, base * (1 << exponent))
    return ceiling / 2 + (ceiling / 2) * rng.random()


def rate_after_429(rate: float | None) -> tuple[float, float | None]:
    """The learnt rate after a 429 and its new ceiling (None: the rate that drew it is unknown)."""
    if rate is None:
        return INITIAL_RATE, None
    return max(MIN_RATE, rate * RATE_DECREASE), rate


def rate_after_answer(rate: float, ceiling: float | None) -> float | None:
    """The learnt rate after an answered request; None once it limits nothing any more."""
    near = ceiling is not None and rate >= ceiling * NEAR_CEILING
    grown = rate * (SLOW_GROWTH if near else FAST_GROWTH)
    return None if grown >= FORGET_RATE else grown


def key_fingerprint(api_key: str) -> str:
    """A short, one-way name for an API key, to remember a refused key without storing it."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]
