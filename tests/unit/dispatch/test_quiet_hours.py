"""Quiet hours in the recipient's own time, with the time injected: several zones and countries."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from worker.dispatch.policy.quiet_hours import quiet_until, zones_of
from worker.policy import QuietWindow

WINDOW = QuietWindow.parse("21:00-08:00")
NO_MARGIN = timedelta(0)
STOCKHOLM = "46701234567"  # UTC+1 in December
TOKYO = "81312345678"  # UTC+9
NEW_YORK = "12125551234"  # UTC-5 in December
INDONESIA = "62811234567"  # a mobile prefix spanning Jakarta (UTC+7) and Makassar (UTC+8)


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("recipient", "now", "until"),
    [
        (STOCKHOLM, utc(7, 19, 59), None),  # 20:59 local
        (STOCKHOLM, utc(7, 20, 0), utc(8, 7)),  # 21:00 local: until 08:00 local
        (STOCKHOLM, utc(8, 6, 59), utc(8, 7)),
        (STOCKHOLM, utc(8, 7), None),
        (TOKYO, utc(7, 10), None),  # 19:00 in Tokyo, 11:00 in Stockholm
        (TOKYO, utc(7, 12, 30), utc(7, 23)),  # 21:30 in Tokyo: until 08:00 there
        (NEW_YORK, utc(7, 12, 30), utc(7, 13)),  # 07:30 in New York
        (NEW_YORK, utc(8, 2), utc(8, 13)),  # 21:00 in New York
        (NEW_YORK, utc(7, 20), None),  # 15:00 in New York, while Stockholm is quiet
    ],
)
def test_a_message_is_held_until_the_end_of_the_window_in_its_own_zone(
    recipient: str, now: datetime, until: datetime | None
) -> None:
    assert quiet_until(WINDOW, recipient, now, NO_MARGIN) == until


def test_a_number_with_several_zones_is_quiet_while_any_is_and_waits_for_the_last() -> None:
    assert {zone.key for zone in zones_of(INDONESIA)} == {"Asia/Jakarta", "Asia/Makassar"}
    # 13:30 UTC: 20:30 in Jakarta (not quiet), 21:30 in Makassar (quiet).
    held = quiet_until(WINDOW, INDONESIA, utc(7, 13, 30), NO_MARGIN)
    # Makassar's 08:00 is 00:00 UTC, when Jakarta is still at 07:00: Jakarta's 08:00 it is.
    assert held == utc(8, 1)
    assert quiet_until(WINDOW, INDONESIA, utc(8, 1), NO_MARGIN) is None
    assert quiet_until(WINDOW, INDONESIA, utc(7, 12, 59), NO_MARGIN) is None


def test_no_request_starts_inside_the_window_the_margin_holds_it_before() -> None:
    just_before = utc(
        7,
        19,
        59,
    ) + timedelta(seconds=30)  # 20:59:30 in Stockholm
    assert quiet_until(WINDOW, STOCKHOLM, just_before, NO_MARGIN) is None
    assert quiet_until(WINDOW, STOCKHOLM, just_before, timedelta(seconds=60)) == utc(8, 7)


def test_a_window_within_one_day_and_an_unknown_country() -> None:
    lunch = QuietWindow.parse("12:00-13:30")
    assert (lunch.start, lunch.end) == (time(12), time(13, 30))
    assert quiet_until(lunch, STOCKHOLM, utc(7, 11, 15), NO_MARGIN) == utc(7, 12, 30)
    assert quiet_until(WINDOW, "99912345678", utc(7, 22), NO_MARGIN) is None


def test_zones_so_far_apart_that_one_is_always_quiet_hold_nothing() -> None:
    assert len(zones_of("15555555555")) > 20  # no known area code: every +1 zone, Guam to Hawaii
    assert quiet_until(WINDOW, "15555555555", utc(7, 22), NO_MARGIN) is None


@pytest.mark.parametrize("written", ["21-08", "25:00-08:00", "08:00-08:00", "", "21:00\u201308:00"])
def test_a_bad_window_is_refused_naming_the_format(written: str) -> None:
    with pytest.raises(ValueError, match=r"21:00-08:00|two times|same time"):
        QuietWindow.parse(written)
