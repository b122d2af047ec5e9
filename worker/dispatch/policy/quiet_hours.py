"""Quiet hours in the recipient's own time: whether a message may go now, and when it may.

A recipient's time zones come from their number (``phonenumbers`` carries the data): those of
its prefix where the data knows them (a US area code, a Brazilian area code), else those of its
country. Where a number has several (a Russian mobile), a moment is quiet when it is quiet in
any of them, and the window ends when it has ended in all of them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as number_zones

from worker.policy import QuietWindow

# The most window ends a message is moved through before it is found free (zones that are
# quiet one after the other); far above what a real spread of zones needs.
_MAX_STEPS = 8


@lru_cache(maxsize=4096)
def _zones(names: tuple[str, ...]) -> tuple[ZoneInfo, ...]:
    zones = []
    for name in names:
        try:
            zones.append(ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):  # "Etc/Unknown", or a zone this host lacks
            continue
    return tuple(zones)


def zones_of(recipient: str) -> tuple[ZoneInfo, ...]:
    """The time zones ``phonenumbers`` gives for a number (MSISDN digits): those of its
    prefix (a US area code names one zone), else its country's; none when unknown."""
    for digits in (1, 2, 3):  # calling codes are prefix-free: the first known one is it
        head, rest = recipient[:digits], recipient[digits:]
        if not head.isdigit() or int(head) not in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            continue
        number = phonenumbers.PhoneNumber(
            country_code=int(head), national_number=int(rest) if rest.isdigit() else 0
        )
        return _zones(number_zones.time_zones_for_geographical_number(number))
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
    # Zones so far apart that some are always inside the window (an unassigned +1 area code
    # reads as every NANP zone, Guam to Hawaii): as a number of unknown zone, not held.
    return None
