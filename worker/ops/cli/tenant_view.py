"""`outbox inspect --tenant NAME`: one tenant's messages by status, its daily quotas today, its
own key's brakes, and its pending messages in the order they fall due, with what holds each."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from models.text import escaped
from worker.database import database_now
from worker.dispatch.gate import KeyState, read_keys
from worker.ops import access
from worker.ops.cli.times import human_duration
from worker.ops.policy_figures import rule_of
from worker.ops.queries import lane_name
from worker.ops.tenant_figures import (
    COUNTED,
    TenantFigures,
    quota_figures,
    tenant_figures,
    waiting_messages,
)
from worker.settings import OperatorSettings


def tenant_view(settings: OperatorSettings, tenant: str) -> tuple[datetime, dict[str, Any]]:
    """What `inspect --tenant` shows, as JSON-ready values, and the outbox's time it was read at."""
    quotas = settings.quotas
    with access.open_outbox(settings.database_url) as engine, engine.connect() as connection:
        now = database_now(engine)
        lines = tenant_figures(connection, now, tenant=tenant) or [TenantFigures(tenant)]
        used = [line for line in quota_figures(connection, quotas, now) if line.tenant == tenant]
        waiting = waiting_messages(connection, tenant)
        key = own_key(tenant, read_keys(connection, now))
    figures = lines[0].to_json()
    for status in COUNTED:
        figures.setdefault(status.value, 0)
    listed = [
        {
            **message,
            "priority": lane_name(message["priority"]),
            "next_attempt_at": message["next_attempt_at"].isoformat(),
            "policy": rule_of(message["last_error"], message["next_attempt_at"]),
        }
        for message in waiting
    ]
    return now, {
        **figures,
        "quotas": [{k: v for k, v in line.to_json().items() if k != "tenant"} for line in used],
        "quota_day": quotas.day_of(now).isoformat() if quotas else None,
        "next_quota_day_at": quotas.next_day(now).isoformat() if quotas else None,
        "key": None if key is None else key.to_json(),
        "waiting": listed,
    }


def own_key(tenant: str, keys: list[KeyState]) -> KeyState | None:
    """The brakes of ``tenant``'s own key, the row the workers named it on (None: it sends
    under WIRAYA_API_KEY, whose brakes are the gate's)."""
    return next((key for key in keys if tenant in key.tenants), None)


def print_tenant(settings: OperatorSettings, tenant: str, as_json: bool) -> int:
    now, view = tenant_view(settings, tenant)
    if as_json:
        document = json.dumps(view, indent=2, ensure_ascii=False)
        print("\n".join(escaped(line) for line in document.split("\n")))
        return 0
    counts = ", ".join(f"{status.value} {view[status.value]:,}" for status in COUNTED)
    oldest = view["oldest_due_at"]
    waited = "-" if oldest is None else human_duration(now - datetime.fromisoformat(oldest))
    print(f"tenant         {escaped(tenant) or repr('')}")
    print(f"messages       {counts}; due {view['due']:,}, the oldest waiting {waited}")
    for quota in view["quotas"]:
        full = " (used up)" if quota["used"] >= quota["limit"] else ""
        print(f"quota today    {quota['unit']} {quota['used']:,} of {quota['limit']:,}{full}")
    if view["quotas"]:
        print(f"next quota day {view['next_quota_day_at']}")
    key = view["key"]
    print(f"key            {'WIRAYA_API_KEY (`outbox stats`)' if key is None else key['state']}")
    print(f"\nnext pending ({len(view['waiting'])})")
    for message in view["waiting"]:
        reason = message["last_error"] or "-"
        print(
            f"  {escaped(message['client_message_id']):<24} {message['priority']:<7}"
            f" due {message['next_attempt_at']}  attempts {message['attempts']}  {escaped(reason)}"
        )
    return 0
