"""Times on the command line: durations (`90m`, `1h30m`), moments (ISO 8601 or `2h ago`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from worker.errors import OperatorError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_AGO = re.compile(r"\s*ago$")


def parse_duration(text: str, option: str) -> timedelta:
    """'90' (seconds), '45s', '90m', '12h', '30d', '2w', '1h30m' or '1h 30m' as a timedelta."""
    value = "".join(text.split()).lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise OperatorError(
                f"{option}: {text!r} is not a duration (e.g. 90, 45s, 90m, 12h, 30d)", 2
            ) from None
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if not 0 < seconds < 100 * 365 * 86_400:
        raise OperatorError(f"{option}: {text!r} must be more than 0 and under 100 years", 2)
    return timedelta(seconds=seconds)


def parse_moment(text: str, option: str, now: datetime) -> datetime:
    """An ISO 8601 time (UTC when no zone is given), or a duration ago: '2h', '2h ago'."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            return now - parse_duration(_AGO.sub("", text.strip().lower()), option)
        except OperatorError:
            raise OperatorError(
                f"{option}: {text!r} is neither an ISO 8601 time (2026-11-27T10:00) "
                "nor a duration ago (2h, 30m, 2h ago)",
                2,
            ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def human_duration(value: timedelta) -> str:
    """'3d 4h', '12m 5s', '0.4s': the two largest units."""
    seconds = value.total_seconds()
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if whole >= size or (unit == "s" and not parts):
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return " ".join(parts[:2])
