"""The retry policy: how long a message or the whole sender waits, and how fast it may send.

A message's transient failure waits an exponential backoff with jitter. The request rate is
learnt from 429s: a 429 takes the rate down to 70 % of the rate that drew it (that rate becomes
the ceiling), each answered request raises it: by 5 % far below the ceiling, by 1 % nearer,
and only by 0.2 % within 5 % of it, where requests a little early or late would draw the next
429. So the sender settles just under the API's limit instead of drawing a 429 a second, and
still finds out, slowly, when the limit was raised.
"""

from __future__ import annotations

import random
from datetime import timedelta

# The rate a first 429 starts from when no rate was known: requests per second.
INITIAL_RATE = 1.0
MIN_RATE = 0.05  # one request every 20 s at the slowest
RATE_DECREASE = 0.7  # a 429 takes the rate down to this share of the rate that drew it
# Per answered request: far below the ceiling, nearer, and at it.
FAST_GROWTH, SLOW_GROWTH, PROBING_GROWTH = 1.05, 1.01, 1.002
NEAR_CEILING, AT_CEILING = 0.85, 0.95  # shares of the ceiling where growth slows down
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
    if ceiling is None or rate < ceiling * NEAR_CEILING:
        growth = FAST_GROWTH
    elif rate < ceiling * AT_CEILING:
        growth = SLOW_GROWTH
    else:
        growth = PROBING_GROWTH
    grown = rate * growth
    return None if grown >= FORGET_RATE else grown
