"""The daily quotas in force: each tenant's limits, the quota day's time zone, the exempt lane."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from models import Priority


@dataclass(frozen=True)
class Quotas:
    """Each tenant's daily limits in messages and in SMS segments (a tenant not named in either
    has none), counted per quota day: midnight to midnight in ``zone``."""

    messages: Mapping[str, int] = field(default_factory=dict)
    segments: Mapping[str, int] = field(default_factory=dict)
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    exempt_urgent: bool = True

    def __bool__(self) -> bool:
        return bool(self.messages or self.segments)

    @property
    def tenants(self) -> set[str]:
        """The tenants with a quota of either kind."""
        return set(self.messages) | set(self.segments)

    def limits(self, tenant: str) -> tuple[int | None, int | None]:
        """``tenant``'s daily limits: (messages, segments), None where it has none."""
        return self.messages.get(tenant), self.segments.get(tenant)

    def exempt(self, priority: int) -> bool:
        """Whether a message of this lane goes whatever its tenant's quota (it still counts)."""
        return self.exempt_urgent and priority == Priority.URGENT

    def day_of(self, moment: datetime) -> date:
        """The quota day ``moment`` falls in."""
        return moment.astimezone(self.zone).date()

    def next_day(self, moment: datetime) -> datetime:
        """When the quota day after ``moment``'s begins, in UTC."""
        following = self.day_of(moment) + timedelta(days=1)
        return datetime.combine(following, time(0), tzinfo=self.zone).astimezone(UTC)
