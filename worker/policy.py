"""The sending policy's rules in force: the quiet window and the settings that turn rules on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from models import Priority

_WINDOW = re.compile(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})")


@dataclass(frozen=True)
class QuietWindow:
    """A daily window of local time, ``start`` to ``end``, crossing midnight when end <= start."""

    start: time
    end: time

    @classmethod
    def parse(cls, written: str) -> QuietWindow:
        """``"21:00-08:00"`` as a window; ValueError naming the format otherwise."""
        match = _WINDOW.fullmatch(written.strip())
        if match is None:
            raise ValueError(f"must be HH:MM-HH:MM, like 21:00-08:00, not {written!r}")
        hour, minute, end_hour, end_minute = (int(part) for part in match.groups())
        try:
            start, end = time(hour, minute), time(end_hour, end_minute)
        except ValueError:
            raise ValueError(f"{written!r} is not two times of day") from None
        if start == end:
            raise ValueError(f"{written!r} starts and ends at the same time")
        return cls(start, end)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def holds(self, local: time) -> bool:
        """Whether ``local`` (a time of day) falls inside the window."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def end_after(self, moment: datetime, zone: ZoneInfo) -> datetime:
        """The window's end following ``moment`` in ``zone``, in UTC (``moment`` inside it)."""
        local = moment.astimezone(zone)
        end = datetime.combine(local.date(), self.end, tzinfo=zone)
        if end <= local:
            end = datetime.combine(local.date() + timedelta(days=1), self.end, tzinfo=zone)
        return end.astimezone(UTC)


@dataclass(frozen=True)
class Policy:
    """The rules in force (from the worker's settings); every one off by default."""

    quiet_hours: QuietWindow | None = None
    quiet_lanes: frozenset[Priority] = frozenset({Priority.BULK})
    min_interval: timedelta = timedelta(0)
    dedupe_window: timedelta = timedelta(0)
    suppress_after_not_delivered: int = 0
