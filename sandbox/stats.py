"""Counters of what the sandbox answered, so tests can bound requests and benchmarks read rates."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

_WINDOW_SECONDS = 60
_RECENT_SECONDS = 5  # rates are averaged over the last five complete seconds


class Stats:
    """Request and message counters, with per-second buckets for rates; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Start counting again from zero."""
        with self._lock:
            self._started = time.monotonic()
            self._counts: Counter[str] = Counter()
            self._by_status: Counter[int] = Counter()
            self._seconds: deque[tuple[int, int, int]] = deque()  # (second, requests, messages)
            self._peak = (0, 0)

    def request(self) -> None:
        """An API request arrived (before any fault or check)."""
        self.add(requests=1)
        self._tick(requests=1, messages=0)

    def answered(self, status: int) -> None:
        """An API request was answered with `status`."""
        with self._lock:
            self._by_status[status] += 1

    def add(self, **counts: int) -> None:
        """Add to named counters: messages, accepted, duplicates, rejected, dropped, ...

        `hung_up` counts answers the client closed the connection on before they were written
        whole (it gave up waiting, e.g. on a trickling answer); `received_while_answering`
        counts messages received again while a slow or trickling answer holding them was still
        on its way: a client resending what is still in flight.
        """
        with self._lock:
            self._counts.update(counts)
        if "messages" in counts:
            self._tick(requests=0, messages=counts["messages"])

    def count(self, name: str) -> int:
        """One counter's value."""
        with self._lock:
            return self._counts[name]

    def status_count(self, status: int) -> int:
        """How many requests were answered with `status`."""
        with self._lock:
            return self._by_status[status]

    def to_json(self) -> dict[str, Any]:
        """Every counter, answers by status, and request/message rates per second."""
        with self._lock:
            now = int(time.monotonic())
            recent = [(r, m) for s, r, m in self._seconds if now - _RECENT_SECONDS <= s < now]
            return {
                **{name: self._counts[name] for name in _NAMES},
                "by_status": {str(status): n for status, n in sorted(self._by_status.items())},
                "uptime_seconds": round(time.monotonic() - self._started, 3),
                "peak_requests_per_second": self._peak[0],
                "peak_messages_per_second": self._peak[1],
                "recent_requests_per_second": sum(r for r, _ in recent) / _RECENT_SECONDS,
                "recent_messages_per_second": sum(m for _, m in recent) / _RECENT_SECONDS,
            }

    def _tick(self, requests: int, messages: int) -> None:
        """Add to the current second's bucket and track the busiest second."""
        second = int(time.monotonic())
        with self._lock:
            if self._seconds and self._seconds[-1][0] == second:
                _, old_requests, old_messages = self._seconds.pop()
                requests, messages = requests + old_requests, messages + old_messages
            self._seconds.append((second, requests, messages))
            self._peak = (max(self._peak[0], requests), max(self._peak[1], messages))
            self._expire(second)

    def _expire(self, second: int) -> None:
        while self._seconds and self._seconds[0][0] <= second - _WINDOW_SECONDS:
            self._seconds.popleft()


_NAMES = (
    "requests",
    "during_outage",
    "rate_limited",
    "dropped",
    "slow",
    "bad_json",
    "messages",
    "accepted",
    "duplicates",
    "rejected",
    "transient",
    "omitted",
    "invalid",
    "poisoned",
    "trickled",
    "hung_up",
    "received_while_answering",
)
