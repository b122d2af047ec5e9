"""The daily quotas' settings: each tenant's limits, the quota day's time zone, the exempt lane."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, field_validator

from worker.quotas import Quotas
from worker.setting_concern import _Concern
from worker.tenant_settings import per_tenant, tenant_quota

PerTenantQuota = Annotated[dict[str, int], BeforeValidator(per_tenant(tenant_quota))]


class QuotaSettings(_Concern):
    """How much each tenant may send in a quota day (docs/tenants.md#daily-quotas)."""

    daily_quotas: PerTenantQuota = Field(default_factory=dict, alias="OUTBOX_DAILY_QUOTAS")
    daily_segment_quotas: PerTenantQuota = Field(
        default_factory=dict, alias="OUTBOX_DAILY_SEGMENT_QUOTAS"
    )
    quota_time_zone: str = Field("UTC", alias="OUTBOX_QUOTA_TIME_ZONE", min_length=1)
    # Urgent messages (codes, alerts) go whatever the quota, and count: see docs/tenants.md.
    quota_exempt_urgent: bool = Field(True, alias="OUTBOX_QUOTA_EXEMPT_URGENT")

    @field_validator("quota_time_zone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                "no time zone this host knows: an IANA name like UTC or Europe/Stockholm"
            ) from None
        return name

    @cached_property
    def quotas(self) -> Quotas:
        """The quotas in force, as the dispatcher and the metrics read them."""
        return Quotas(
            messages=self.daily_quotas,
            segments=self.daily_segment_quotas,
            zone=ZoneInfo(self.quota_time_zone),
            exempt_urgent=self.quota_exempt_urgent,
        )
