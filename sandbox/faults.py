"""The faults the sandbox can inject, the seeded dice that decide them, and the rate limiter."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any


class Validation(StrEnum):
    """How an invalid communication is answered (Wiraya does not document which it does)."""

    REQUEST = "request"  # 400 for the whole request, nothing in it is processed
    MESSAGE = "message"  # only that message's result fails (permanent), the others are processed


@dataclass(frozen=True)
class Faults:
    """Fault settings; the defaults are a healthy server. Probabilities are per request."""

    latency: timedelta = timedelta(0)  # before doing the work
    p500: float = 0.0  # JSON 500 "An error has occurred."
    p503: float = 0.0  # plain-text 503
    p502_html: float = 0.0  # a proxy's HTML 502 page
    p400_html: float = 0.0  # a proxy's HTML 400 page ("Request Header Or Cookie Too Large")
    outage: bool = False  # every request answered 503 until switched off
    forbidden: bool = False  # every request answered 403 (the caller's IP is not whitelisted)
    slow_after_work: timedelta = timedelta(0)  # answer this late, after the work is done
    p_slow: float = 1.0  # chance that a request is slow, when slow_after_work is set
    p_drop: float = 0.0  # close the connection without an answer, after the work is done
    p_bad_json: float = 0.0  # answer 200 with a truncated JSON body, after the work is done
    trickle: timedelta = timedelta(0)  # write the answer a few bytes at a time over this long
    p_trickle: float = 1.0  # chance that an answer trickles, when trickle is set
    rate_limit: float | None = None  # requests per second before 429s
    retry_after: timedelta | None = None  # Retry-After to send; None: when a request next fits
    max_batch: int | None = None  # more communications: 400 {"bulkItemLimitExceeded": true}
    max_body_bytes: int | None = None  # larger bodies: 413, as a proxy in front would answer
    validation: Validation = Validation.REQUEST
    camel_case_keys: bool = False  # key results as Newtonsoft's camelCase resolver spells them

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: a probability between 0 and 1")
        if self.p500 + self.p503 + self.p502_html + self.p400_html > 1.0:
            raise ValueError("p500 + p503 + p502_html + p400_html: must not exceed 1")
        for name in _DURATIONS:
            value = getattr(self, name)
            if value is not None and value < timedelta(0):
                raise ValueError(f"{name}: must not be negative")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit: requests per second, more than 0")
        for name in ("max_batch", "max_body_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}: at least 1")

    def to_json(self) -> dict[str, Any]:
        """The settings as the admin endpoint shows them: durations in milliseconds."""
        out = asdict(self)
        for name in _DURATIONS:
            value = out.pop(name)
            out[f"{name}_ms"] = None if value is None else value / timedelta(milliseconds=1)
        out["validation"] = self.validation.value
        # A chance of a fault that is off is none: shown as null while its duration is 0 (a
        # null given back leaves the setting as it is, for when the duration is set).
        for chance, duration in _CHANCES:
            if not getattr(self, duration):
                out[chance] = None
        return out

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """These faults with `changes` (admin JSON form, durations as `*_ms`) applied."""
        known = {f.name for f in fields(self)}
        values: dict[str, Any] = {}
        for key, value in changes.items():
            name = key.removesuffix("_ms") if key.endswith("_ms") else key
            if name not in known or (name in _DURATIONS) != key.endswith("_ms"):
                raise ValueError(f"{key}: not a fault setting")
            if not (value is None and name in dict(_CHANCES)):
                values[name] = _coerce(name, value)
        return replace(self, **values)


_PROBABILITIES = (
    "p500",
    "p503",
    "p502_html",
    "p400_html",
    "p_slow",
    "p_drop",
    "p_bad_json",
    "p_trickle",
)
_CHANCES = (("p_slow", "slow_after_work"), ("p_trickle", "trickle"))  # chance, its duration
_DURATIONS = ("latency", "slow_after_work", "retry_after", "trickle")
_FLAGS = ("outage", "forbidden", "camel_case_keys")
_LIMITS = ("max_batch", "max_body_bytes")


def _coerce(name: str, value: Any) -> Any:
    """Check the JSON type of one admin setting and convert it to the field's type."""
    if name in _FLAGS:
        if not isinstance(value, bool):
            raise ValueError(f"{name}: true or false")
        return value
    if name == "validation":
        return Validation(value)
    if value is None and (name in _LIMITS or name in {"rate_limit", "retry_after"}):
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{name}: a number")
    if name in _DURATIONS:
        return timedelta(milliseconds=value)
    if name in _LIMITS:
        if value != int(value):
            raise ValueError(f"{name}: a whole number")
        return int(value)
    return float(value)


class Dice:
    """Seeded randomness shared by all request threads, so a run with one seed repeats."""

    def __init__(self, seed: int | None) -> None:
        self._seed = seed
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def roll(self) -> float:
        """A number in [0, 1)."""
        with self._lock:
            return self._random.random()

    def chance(self, probability: float) -> bool:
        """True with the given probability; no roll is spent when it is 0 or 1."""
        if probability <= 0.0:
            return False
        if probability >= 1.0:
            return True
        return self.roll() < probability

    def reseed(self) -> None:
        """Start the sequence over from the seed."""
        with self._lock:
            self._random.seed(self._seed)


class RateLimiter:
    """A token bucket: it holds max(1, rate) requests and refills at `rate` per second.

    So a client keeping to the rate is never refused, a burst of one second's worth passes at
    once, and over any span T at most rate x T + max(1, rate) requests pass. A refused request
    uses nothing; the wait returned is the time until the next token.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._rate: float | None = None
        self._stamp = clock()

    def admit(self, rate: float | None) -> timedelta | None:
        """None when a request may pass now; otherwise how long until one may."""
        if rate is None:
            return None
        with self._lock:
            now = self._clock()
            capacity = max(1.0, rate)
            if self._rate != rate:  # a new limit starts with a full bucket
                self._rate, self._tokens = rate, capacity
            self._tokens = min(capacity, self._tokens + (now - self._stamp) * rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            return timedelta(seconds=(1.0 - self._tokens) / rate)

    def reset(self) -> None:
        """Forget the current limit's bucket."""
        with self._lock:
            self._rate = None


class AccountLimiters:
    """One token bucket per X-ApiKey: Wiraya's rate limit is per account, so one key's requests
    never use another key's tokens."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str | None, RateLimiter] = {}

    def admit(self, api_key: str | None, rate: float | None) -> timedelta | None:
        """None when a request under ``api_key`` may pass now; otherwise how long until one may."""
        if rate is None:
            return None
        with self._lock:
            bucket = self._buckets.setdefault(api_key, RateLimiter(self._clock))
        return bucket.admit(rate)

    def reset(self) -> None:
        """Forget every key's bucket."""
        with self._lock:
            self._buckets.clear()


def retry_after_seconds(wait: timedelta, configured: timedelta | None) -> int:
    """The Retry-After header value: the configured one, else the wait rounded up, at least 1."""
    chosen = configured if configured is not None else wait
    return max(1, math.ceil(chosen.total_seconds()))
