"""Daily quotas per tenant as settings: read like the other per-tenant lists, a bad value naming
the variable, the tenant and why; the quota day's time zone; the urgent lane's exemption."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from models import Priority
from worker.errors import SettingsError
from worker.settings import OperatorSettings, Settings

KEY = {"WIRAYA_API_KEY": "k"}


def test_quotas_are_read_per_tenant_in_messages_and_segments() -> None:
    settings = Settings.from_environ(
        {
            **KEY,
            "OUTBOX_DAILY_QUOTAS": "clinic=10000, shop=500",
            "OUTBOX_DAILY_SEGMENT_QUOTAS": "shop=1200",
            "OUTBOX_QUOTA_TIME_ZONE": "Europe/Stockholm",
        }
    )
    quotas = settings.quotas
    assert quotas.messages == {"clinic": 10_000, "shop": 500}
    assert quotas.segments == {"shop": 1_200}
    assert quotas.tenants == {"clinic", "shop"}
    # 23:30 UTC on 7 December is 00:30 on the 8th in Stockholm: the next quota day has begun.
    late = datetime(2026, 12, 7, 23, 30, tzinfo=UTC)
    assert quotas.day_of(late) == date(2026, 12, 8)
    assert quotas.next_day(late) == datetime(2026, 12, 8, 23, 0, tzinfo=UTC)


def test_without_quotas_nothing_is_limited_and_the_day_is_utcs() -> None:
    quotas = Settings.from_environ(KEY).quotas
    assert not quotas and quotas.tenants == set()
    assert quotas.day_of(datetime(2026, 12, 7, 23, 30, tzinfo=UTC)) == date(2026, 12, 7)
    assert quotas.exempt(Priority.URGENT) and not quotas.exempt(Priority.BULK)


def test_the_urgent_lane_can_be_held_to_the_quota_too() -> None:
    quotas = Settings.from_environ({**KEY, "OUTBOX_QUOTA_EXEMPT_URGENT": "false"}).quotas
    assert not quotas.exempt(Priority.URGENT)


def test_operator_commands_read_the_quotas_for_the_metrics() -> None:
    settings = OperatorSettings.from_environ({"OUTBOX_DAILY_QUOTAS": "clinic=10"})
    assert settings.quotas.messages == {"clinic": 10}


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("OUTBOX_DAILY_QUOTAS", "clinic=0", "tenant 'clinic': the quota must be a whole number"),
        ("OUTBOX_DAILY_QUOTAS", "clinic=1.5", "tenant 'clinic': the quota must be a whole number"),
        ("OUTBOX_DAILY_QUOTAS", "clinic=lots", "tenant 'clinic': the quota must be a whole"),
        ("OUTBOX_DAILY_QUOTAS", "clinic=10,clinic=20", "tenant 'clinic' is named twice"),
        ("OUTBOX_DAILY_QUOTAS", "clinic", "entry 1 must be tenant=value"),
        ("OUTBOX_DAILY_SEGMENT_QUOTAS", "shop=-3", "tenant 'shop': the quota must be a whole"),
        ("OUTBOX_QUOTA_TIME_ZONE", "Mars/Olympus", "no time zone this host knows"),
        ("OUTBOX_QUOTA_TIME_ZONE", "../etc", "no time zone this host knows"),
    ],
)
def test_a_bad_quota_setting_names_the_variable_and_why(
    variable: str, value: str, words: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ({**KEY, variable: value})
    assert str(refused.value).startswith(f"{variable}: ")
    assert words in str(refused.value)
