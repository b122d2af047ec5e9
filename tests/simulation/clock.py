"""Simulated time: one true clock the scheduler moves, and each host's wall clock beside it.

True time is the database's and the API's; it only moves when every actor waits. A host's wall
clock is true time plus an offset that the fault plan steps (NTP stepping it back, a host
running ahead). Monotonic clocks never step: every host reads true time as seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

# Every run starts at the same moment, so that a seed replays the same times.
EPOCH = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


class SimClock:
    """True time: seconds since the run began, moved forward by the scheduler only."""

    def __init__(self, start: datetime = EPOCH) -> None:
        self.start = start
        self.elapsed = 0.0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        """A monotonic reading (never stepped, shared by every host)."""
        return 1_000.0 + self.elapsed

    def advance_to(self, elapsed: float) -> None:
        assert elapsed >= self.elapsed, "true time only moves forward"
        self.elapsed = elapsed

    def at(self, elapsed: float) -> datetime:
        return self.start + timedelta(seconds=elapsed)


class HostClock:
    """One host's wall clock: true time plus the offset the fault plan gave it."""

    def __init__(self, true: SimClock) -> None:
        self.true = true
        self.offset = 0.0

    def __call__(self) -> datetime:
        return self.true.now() + timedelta(seconds=self.offset)
