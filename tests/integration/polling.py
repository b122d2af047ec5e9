"""Waiting on a condition in tests, instead of sleeping and hoping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float = 10.0) -> T:
    """The probe's first non-None value, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while (value := probe()) is None:
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)
    return value
