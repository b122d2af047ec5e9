"""Quiet hours in the recipient's own time: whether a message may go now, and when it may.

A recipient's time zones come from their number's country calling code (``phonenumbers``
carries the data); where a country spans several zones, a moment is quiet when it is quiet in
any of them, and the window ends when it has ended in all of them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as number_zones

from worker.policy import QuietWindow

_UNKNOWN_ZONE = "Etc/Unknown"
# The most window ends a message is moved through before it is found free (zones that are
# quiet one after the other); far above what any country's spread of zones needs.
_MAX_STEPS = 8


@lru_cache(maxsize=1024)
def _zones_of_country(country_code: int) -> tuple[ZoneInfo, ...]:
    number = phonenumbers.PhoneNumber(country_code=country_code, national_number=0)
    zones = []
    for name in number_zones.time_zones_for_geographical_number(number):
        if name == _UNKNOWN_ZONE:
            continue
        try:
            zones.append(ZoneInfo(name))
        except ZoneInfoNotFoundError:
            continue
    return tuple(zones)


def zones_of(recipient: str) -> tuple[ZoneInfo, ...]:
    """The time zones of the country a number (MSISDN digits) belongs to; none when unknown."""
    for digits in (1, 2, 3):  # calling codes are prefix-free: the first known one is it
        code = int(recipient[:digits]) if recipient[:digits].isdigit() else 0
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            return _zones_of_country(code)
    return ()


def _quiet_in(window: QuietWindow, zones: tuple[ZoneInfo, ...], moment: datetime) -> list[ZoneInfo]:
    return [zone for zone in zones if window.holds(moment.astimezone(zone).time())]


def quiet_until(
    window: QuietWindow, recipient: str, now: datetime, margin: timedelta
) -> datetime | None:
    """When the window is over for ``recipient`` if any moment of ``now`` .. ``now + margin``
    is quiet in one of their zones (so no request starts inside it); None when it may go."""
    zones = zones_of(recipient)
    if not zones:
        return None
    later = now + margin
    if not _quiet_in(window, zones, now) and not _quiet_in(window, zones, later):
        return None
    moment = now if _quiet_in(window, zones, now) else later
    for _ in range(_MAX_STEPS):
        quiet = _quiet_in(window, zones, moment)
        if not quiet:
            return moment
        moment = max(window.end_after(moment, zone) for zone in quiet)
    return moment
