"""The clocks of the outbox: the host's wall clock, and the outbox's time every process shares.

No host's clock is the outbox's clock (docs/sending-gate.md#no-hosts-clock-is-the-outboxs-clock):
the times workers share (the gate's pause, probe times and slot cursor, the rows' due times and
leases) are in the database's clock, which every process reads now and then and advances in
between by its own monotonic clock, so a host whose wall clock steps back or runs ahead keeps the
outbox's time.
Everything that compares with those times takes a ``Clock``: tests and the simulator inject
their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]

# How long a process advances the database's time by its monotonic clock before reading it
# again: a database clock stepped by NTP is followed within this, at one read per interval.
DATABASE_CLOCK_REFRESH = timedelta(seconds=5)


def utc_now() -> datetime:
    """The host's wall clock, in UTC."""
    return datetime.now(UTC)


class DatabaseClock:
    """The database's time as last read, advanced by this process's monotonic clock."""

    def __init__(
        self,
        read: Clock,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        refresh: timedelta = DATABASE_CLOCK_REFRESH,
    ) -> None:
        self.read = read
        self.monotonic = monotonic
        self.refresh = refresh.total_seconds()
        # The database's time and the monotonic moment it stands for, as one value: beat's
        # prune thread reads the clock too, and must never pair one read's time with another's.
        self.reading: tuple[datetime, float] | None = None

    def __call__(self) -> datetime:
        reading = self.reading
        if reading is None or not 0 <= self.monotonic() - reading[1] < self.refresh:
            reading = self.sync()
        anchor, anchored_at = reading
        return anchor + timedelta(seconds=self.monotonic() - anchored_at)

    def sync(self) -> tuple[datetime, float]:
        """Read the database's time; it stands for the middle of the read's round trip."""
        before = self.monotonic()
        database_time = self.read()
        self.reading = (database_time, (before + self.monotonic()) / 2)
        return self.reading
