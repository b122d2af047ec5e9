"""Two tenants, two keys, a real worker and beat against the sandbox (which accepts both keys and
notes the key of each message): every message goes out under its own tenant's key. The small
tenant's waits beside the big tenant's backlog are printed (figures, not asserted)."""

from __future__ import annotations

import statistics

import pytest
from sqlalchemy import text

from models import NewMessage, Priority, SMSProject
from sandbox.ledger import key_fingerprint
from tests.e2e.harness import Stack, ordinary_recipient

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(240)]

KEYS = {"big": "key-of-the-big-tenant", "small": "key-of-the-small-tenant"}
BIG, SMALL = 3_000, 100


def messages(tenant: str, count: int, start: int) -> list[NewMessage]:
    return [
        NewMessage.create(
            client_message_id=f"{tenant}-{number:06d}",
            recipient=ordinary_recipient(start + number),
            content=SMSProject(project_id=123, placeholders=["John", f"Order #{number}"]),
            priority=Priority.BULK,
            tenant=tenant,
        )
        for number in range(count)
    ]


def waits(stack: Stack, tenant: str) -> list[float]:
    """Each accepted message's seconds from insert to accepted."""
    query = text(
        "SELECT EXTRACT(EPOCH FROM accepted_at - created_at) FROM outbox_messages "
        "WHERE tenant = :tenant AND status = 'accepted'"
    )
    with stack.engine.connect() as connection:
        return sorted(float(value) for value in connection.scalars(query, {"tenant": tenant}))


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))]


def test_each_tenants_messages_go_out_under_its_own_key(stack: Stack) -> None:
    admin = stack.start_sandbox("--api-key", KEYS["big"], "--api-key", KEYS["small"])
    listed = ",".join(f"{tenant}={key}" for tenant, key in KEYS.items())
    stack.enqueue(messages("big", BIG, 0))
    stack.start_outbox(WIRAYA_API_KEYS=listed, OUTBOX_BATCH_SIZE="50")
    stack.enqueue(messages("small", SMALL, BIG))

    stack.wait_all_final(BIG + SMALL, timeout=180)

    assert stack.count("status = 'accepted'") == BIG + SMALL, stack.logs()
    ledger = admin.ledger()
    for tenant, key in KEYS.items():
        keys = {entry.key for cmid, entry in ledger.items() if cmid.startswith(f"{tenant}-")}
        assert keys == {key_fingerprint(key)}, tenant
    assert not any(key in stack.outbox_logs() for key in KEYS.values())
    small, big = waits(stack, "small"), waits(stack, "big")
    print(
        f"\nsmall tenant ({SMALL} bulk) beside a {BIG:,} bulk backlog: insert to accepted "
        f"p50 {statistics.median(small):.2f} s, p99 {percentile(small, 0.99):.2f} s; "
        f"big tenant p50 {statistics.median(big):.2f} s, last {big[-1]:.2f} s"
    )
