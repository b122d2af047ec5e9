"""The sending policy's settings: off by default, and a bad value named with its variable."""

from __future__ import annotations

from datetime import time, timedelta

import pytest

from models import Priority
from worker.errors import SettingsError
from worker.settings import Settings

LOCAL = {"WIRAYA_BASE_URL": "http://127.0.0.1:9"}


def test_every_rule_is_off_by_default() -> None:
    policy = Settings.from_environ(LOCAL).policy
    assert policy.quiet_hours is None
    assert policy.quiet_lanes == {Priority.BULK}
    assert (policy.min_interval, policy.dedupe_window) == (timedelta(0), timedelta(0))
    assert policy.suppress_after_not_delivered == 0


def test_the_rules_as_configured() -> None:
    policy = Settings.from_environ(
        {
            **LOCAL,
            "OUTBOX_QUIET_HOURS": "21:30-08:00",
            "OUTBOX_QUIET_PRIORITIES": "Normal, bulk",
            "OUTBOX_RECIPIENT_MIN_INTERVAL_SECONDS": "6",
            "OUTBOX_DEDUPE_WINDOW_SECONDS": "600",
            "OUTBOX_SUPPRESS_AFTER_NOT_DELIVERED": "3",
        }
    ).policy
    assert policy.quiet_hours is not None
    assert (policy.quiet_hours.start, policy.quiet_hours.end) == (time(21, 30), time(8))
    assert policy.quiet_lanes == {Priority.NORMAL, Priority.BULK}
    assert policy.min_interval == timedelta(seconds=6)
    assert policy.dedupe_window == timedelta(minutes=10)
    assert policy.suppress_after_not_delivered == 3


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("OUTBOX_QUIET_HOURS", "9pm-8am", "OUTBOX_QUIET_HOURS: must be HH:MM-HH:MM"),
        (
            "OUTBOX_QUIET_PRIORITIES",
            "bulk,campaigns",
            "OUTBOX_QUIET_PRIORITIES: campaigns is no lane",
        ),
        ("OUTBOX_RECIPIENT_MIN_INTERVAL_SECONDS", "-1", "OUTBOX_RECIPIENT_MIN_INTERVAL_SECONDS"),
        ("OUTBOX_DEDUPE_WINDOW_SECONDS", "soon", "OUTBOX_DEDUPE_WINDOW_SECONDS"),
        ("OUTBOX_SUPPRESS_AFTER_NOT_DELIVERED", "-2", "OUTBOX_SUPPRESS_AFTER_NOT_DELIVERED"),
    ],
)
def test_a_bad_value_stops_the_process_naming_the_variable(
    name: str, value: str, said: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_environ({**LOCAL, name: value})
    assert str(caught.value).startswith(said)
