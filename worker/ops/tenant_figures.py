"""`outbox stats --tenant`: each tenant's unfinished and failed messages, its oldest due one, and
what it used today of its daily quotas.

Accepted messages are left out: counting them by tenant reads the whole history. The figures
come from one grouped read of the pending, sending, failed and cancelled rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, select

from models import Status, outbox_tenant_quotas
from models.outbox import outbox_messages as outbox
from worker.quotas import Quotas

COUNTED = (Status.PENDING, Status.SENDING, Status.FAILED, Status.CANCELLED)


@dataclass
class TenantFigures:
    """One tenant's counts by status, how many are due now, and its oldest due time."""

    tenant: str
    counts: dict[str, int] = field(default_factory=dict)
    due: int = 0
    oldest_due_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        oldest = self.oldest_due_at.isoformat() if self.oldest_due_at else None
        return {"tenant": self.tenant, **self.counts, "due": self.due, "oldest_due_at": oldest}


def tenant_figures(
    connection: Connection,
    now: datetime,
    statuses: tuple[Status, ...] = COUNTED,
    tenant: str | None = None,
) -> list[TenantFigures]:
    """Every tenant with a message of ``statuses`` (by default pending, sending, failed or
    cancelled), by name (``tenant`` alone, when given)."""
    due = (outbox.c.status == Status.PENDING) & (outbox.c.next_attempt_at <= now)
    query = (
        select(
            outbox.c.tenant,
            outbox.c.status,
            func.count(),
            func.sum(case((due, 1), else_=0)),
            func.min(case((due, outbox.c.next_attempt_at), else_=None)),
        )
        .where(outbox.c.status.in_([status.value for status in statuses]))
        .group_by(outbox.c.tenant, outbox.c.status)
    )
    if tenant is not None:
        query = query.where(outbox.c.tenant == tenant)
    figures: dict[str, TenantFigures] = {}
    for tenant, status, count, due_count, oldest in connection.execute(query):
        line = figures.setdefault(str(tenant), TenantFigures(str(tenant)))
        line.counts[str(status)] = int(count)
        line.due += int(due_count or 0)
        if oldest is not None:
            line.oldest_due_at = (
                oldest if line.oldest_due_at is None else min(oldest, line.oldest_due_at)
            )
    for line in figures.values():
        for status in statuses:
            line.counts.setdefault(status.value, 0)
    return [figures[name] for name in sorted(figures)]


OTHER = "other"  # the label of every tenant settings do not name


def labelled(lines: list[TenantFigures], named: set[str]) -> dict[str, TenantFigures]:
    """The figures by metric label: a tenant named in settings (or the default tenant, "")
    under its own name, every other one summed into ``other``: a bounded set of labels."""
    by_label: dict[str, TenantFigures] = {}
    for line in lines:
        label = line.tenant if line.tenant in named or not line.tenant else OTHER
        total = by_label.setdefault(label, TenantFigures(label))
        for status, count in line.counts.items():
            total.counts[status] = total.counts.get(status, 0) + count
        total.due += line.due
        if line.oldest_due_at is not None and (
            total.oldest_due_at is None or line.oldest_due_at < total.oldest_due_at
        ):
            total.oldest_due_at = line.oldest_due_at
    return by_label


@dataclass(frozen=True)
class QuotaFigures:
    """A tenant's daily quota today: what it used and its limit, per unit (messages, segments)."""

    tenant: str
    unit: str  # "messages" or "segments"
    used: int
    limit: int

    def to_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "unit": self.unit, "used": self.used, "limit": self.limit}


def quota_figures(connection: Connection, quotas: Quotas, now: datetime) -> list[QuotaFigures]:
    """Each quota in force and what its tenant used of it on the quota day of ``now``."""
    if not quotas:
        return []
    counters = outbox_tenant_quotas
    query = select(counters.c.tenant, counters.c.messages, counters.c.segments).where(
        counters.c.day == quotas.day_of(now)
    )
    used = {
        str(tenant): (int(messages), int(parts))
        for tenant, messages, parts in connection.execute(query)
    }
    lines = []
    for unit, limits in (("messages", quotas.messages), ("segments", quotas.segments)):
        column = 0 if unit == "messages" else 1
        for tenant, limit in sorted(limits.items()):
            lines.append(QuotaFigures(tenant, unit, used.get(tenant, (0, 0))[column], limit))
    return lines


WAITING_SHOWN = 20  # a tenant's pending messages `outbox inspect --tenant` lists


def waiting_messages(
    connection: Connection, tenant: str, limit: int = WAITING_SHOWN
) -> list[dict[str, Any]]:
    """``tenant``'s pending messages in the order they fall due, the first ``limit``."""
    columns = ("client_message_id", "priority", "attempts", "next_attempt_at", "last_error")
    query = (
        select(*(outbox.c[name] for name in columns))
        .where(outbox.c.status == Status.PENDING, outbox.c.tenant == tenant)
        .order_by(outbox.c.next_attempt_at, outbox.c.id)
        .limit(limit)
    )
    return [dict(row._mapping) for row in connection.execute(query)]
