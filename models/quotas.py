"""The daily quotas' counters, ``outbox_tenant_quotas``: what each tenant sent on each quota day.

A row per quota day and tenant, moved forward by one conditional statement per batch
(worker/dispatch/policy/quotas.py); a message counts once, on the day it first goes past its
quota (``outbox_messages.quota_day``).
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, Date, Integer, Table, Text, text

from models.outbox import Base

outbox_tenant_quotas = Table(
    "outbox_tenant_quotas",
    Base.metadata,
    Column("day", Date, primary_key=True),
    Column("tenant", Text, primary_key=True),
    Column("messages", Integer, nullable=False, server_default=text("0")),
    Column("segments", Integer, nullable=False, server_default=text("0")),
    CheckConstraint("messages >= 0 AND segments >= 0", name="counts"),
)
