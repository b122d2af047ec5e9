"""The retry policy: how long a message or the whole sender waits after a failure."""

from __future__ import annotations

import hashlib
import random
from datetime import timedelta

MIN_SPACING = timedelta(milliseconds=50)
MAX_SPACING = timedelta(seconds=10)
# Each answered request after a 429 shortens the spacing by 2%: a learnt rate holds for
# dozens of requests, and fades out after a few hundred (below FORGET_SPACING it is dropped).
SPACING_RELIEF = 0.98
FORGET_SPACING = timedelta(milliseconds=5)


def backoff(attempt: int, *, base: timedelta, cap: timedelta, rng: random.Random) -> timedelta:
    """Exponential delay from ``base``, doubling per attempt up to ``cap``, with jitter.

    Half the delay is fixed and half random ("equal jitter"), so retries spread out
    without ever coming back at once.
    """
    exponent = min(max(attempt, 1) - 1, 32)
    ceiling = min(cap, base * (1 << exponent))
    return ceiling / 2 + (ceiling / 2) * rng.random()


def after_rate_limit(spacing: timedelta) -> timedelta:
    """The spacing between requests after a 429: double it (from 50 ms), at most 10 s."""
    return min(MAX_SPACING, max(MIN_SPACING, spacing * 2))


def after_success(spacing: timedelta) -> timedelta:
    """The spacing after an answered request: a little shorter, zero once negligible."""
    relieved = spacing * SPACING_RELIEF
    return relieved if relieved >= FORGET_SPACING else timedelta(0)


def key_fingerprint(api_key: str) -> str:
    """A short, one-way name for an API key, to remember a refused key without storing it."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]
