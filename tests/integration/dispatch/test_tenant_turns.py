"""Waiting-time fairness within a lane: a tenant's campaign counts as one waiting tenant, so a
small tenant's messages enqueued after it go within a batch or two; weights give a tenant more
turns; lanes stay strict across tenants; a tenant alone takes every batch (both databases)."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import text

from models import Priority
from tests.integration.dispatch.harness import Outbox
from tests.integration.dispatch.test_tenant_keys import enqueue


def tenants_by_batch(outbox: Outbox, batches: int, **settings: str) -> list[set[str]]:
    """The tenants each of ``batches`` dispatches sent, in order."""
    settings.setdefault("OUTBOX_TENANT_WEIGHTS", "big=1")  # tenants named: the turns in force
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=5, **settings)
    served = []
    for _ in range(batches):
        before = set(outbox.sandbox.ledger())
        dispatcher.dispatch_once()
        outbox.clock.advance(1)
        fresh = set(outbox.sandbox.ledger()) - before
        served.append({cmid.split("-")[0] for cmid in fresh})
    return served


def test_a_small_tenant_goes_within_a_batch_or_two_of_a_campaign(outbox: Outbox) -> None:
    enqueue(outbox, "big", 40, 100, priority=Priority.BULK)
    outbox.clock.advance(5)
    enqueue(outbox, "small", 5, 200, priority=Priority.BULK)

    served = tenants_by_batch(outbox, 10)

    assert {"small"} in served[:2], served
    assert served[:9].count({"big"}) == 8  # the rest of the capacity, none left idle
    assert served[9] == set()


def test_a_weight_gives_a_tenant_more_turns(outbox: Outbox) -> None:
    enqueue(outbox, "clinic", 40, 100, priority=Priority.BULK)
    enqueue(outbox, "shop", 40, 200, priority=Priority.BULK)

    served = tenants_by_batch(outbox, 9, OUTBOX_TENANT_WEIGHTS="clinic=2")

    turns = Counter(tenant for batch in served for tenant in batch)
    assert turns["clinic"] >= 2 * turns["shop"] - 1, served


def test_lanes_stay_strict_across_tenants(outbox: Outbox) -> None:
    enqueue(outbox, "big", 10, 100, priority=Priority.BULK)
    outbox.clock.advance(5)
    enqueue(outbox, "small", 5, 200, priority=Priority.NORMAL)

    served = tenants_by_batch(outbox, 2)

    assert served == [{"small"}, {"big"}]
    with outbox.engine.connect() as connection:
        pending = connection.scalar(
            text("SELECT count(*) FROM outbox_messages WHERE tenant='big' AND status='pending'")
        )
    assert pending == 5


def test_a_dispatchs_summary_counts_its_claims_by_tenant(outbox: Outbox) -> None:
    enqueue(outbox, "clinic", 3, 100)
    enqueue(outbox, "shop", 2, 200)
    enqueue(outbox, "", 1, 300)
    dispatcher = outbox.dispatcher(OUTBOX_TENANT_WEIGHTS="clinic=1")

    summary = dispatcher.dispatch_once()
    for _ in range(2):
        summary.add(dispatcher.dispatch_once())

    result = summary.as_dict()  # what Flower shows as the task's result
    assert result["by_tenant"] == {"clinic": 3, "shop": 2, "": 1}
    assert result["claimed"] == sum(result["by_tenant"].values())
