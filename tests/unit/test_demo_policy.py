"""The demo's quiet-hours example: quiet now for its recipient, never for the campaign's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from worker.demo.messages import SPECIAL
from worker.demo.policy import quiet_hours, settings
from worker.dispatch.policy.quiet_hours import quiet_until
from worker.settings_policy import PolicySettings

LEASE = timedelta(seconds=15)
WINTER = datetime(2026, 12, 7, tzinfo=UTC)
SUMMER = datetime(2026, 7, 7, tzinfo=UTC)


@pytest.mark.parametrize("day", [WINTER, SUMMER], ids=["winter", "summer"])
@pytest.mark.parametrize("minutes", range(0, 24 * 60, 20))
def test_the_example_is_held_to_its_window_end_and_the_campaign_is_not(
    day: datetime, minutes: int
) -> None:
    now = day + timedelta(minutes=minutes)
    quiet = quiet_hours(now)
    window = PolicySettings.model_validate(settings(quiet)).policy.quiet_hours
    assert window is not None
    until = quiet_until(window, quiet.recipient, now, LEASE)
    assert until is not None, f"{quiet} is not quiet at {now}"
    assert until - now > timedelta(minutes=59)  # far beyond the demo's run
    for recipient, _, _ in [*SPECIAL.values(), ("46701000000", 0, None)]:
        assert quiet_until(window, recipient, now, LEASE) is None, f"{recipient} held at {now}"
