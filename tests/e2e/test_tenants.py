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


def accepted_times(stack: Stack, tenant: str) -> list[float]:
    """When each of the tenant's messages was accepted (epoch seconds), in order."""
    query = text(
        "SELECT EXTRACT(EPOCH FROM accepted_at) FROM outbox_messages "
        "WHERE tenant = :tenant AND status = 'accepted'"
    )
    with stack.engine.connect() as connection:
        return sorted(float(value) for value in connection.scalars(query, {"tenant": tenant}))


def percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(share * len(values)))]


def test_each_tenants_messages_go_out_under_its_own_key(stack: Stack) -> None:
    admin = stack.start_sandbox("--api-key", KEYS["big"], "--api-key", KEYS["small"])
    listed = ",".join(f"{tenant}={key}" for tenant, key in KEYS.items())
    stack.enqueue(messages("big", BIG, 0))  # the campaign first, then the small tenant's
    stack.enqueue(messages("small", SMALL, BIG))
    stack.start_outbox(WIRAYA_API_KEYS=listed, OUTBOX_BATCH_SIZE="50")

    stack.wait_all_final(BIG + SMALL, timeout=180)

    assert stack.count("status = 'accepted'") == BIG + SMALL, stack.logs()
    ledger = admin.ledger()
    for tenant, key in KEYS.items():
        keys = {entry.key for cmid, entry in ledger.items() if cmid.startswith(f"{tenant}-")}
        assert keys == {key_fingerprint(key)}, tenant
    assert not any(key in stack.outbox_logs() for key in KEYS.values())
    small, big = accepted_times(stack, "small"), accepted_times(stack, "big")
    start = min(small[0], big[0])  # the outbox's first acceptance: both were due before it
    waited = [moment - start for moment in small]
    print(
        f"\nsmall tenant ({SMALL} bulk, enqueued after a {BIG:,} bulk campaign of another): "
        f"accepted p50 {statistics.median(waited):.2f} s, p99 {percentile(waited, 0.99):.2f} s "
        f"after the first acceptance; the campaign drained in {big[-1] - start:.2f} s"
    )
