"""A claimed batch holds one tenant's rows only (it goes out under that tenant's key): the
tenant of the row the claim would take first, urgent before lapsed leases before normal
before bulk, each lane oldest due first (both databases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from models.outbox import outbox_messages as outbox
from tests.integration.dispatch.test_claim_and_record import add_rows, claim


def tenants_of(engine: Engine, ids: list[int]) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(select(outbox.c.tenant).where(outbox.c.id.in_(ids))))


def test_interleaved_tenants_are_claimed_one_tenant_a_batch(engine: Engine) -> None:
    now = datetime.now(UTC)
    for turn in range(3):
        due = now - timedelta(minutes=10 - turn)
        add_rows(engine, 2, f"a{turn}-", tenant="clinic", next_attempt_at=due)
        add_rows(engine, 2, f"b{turn}-", tenant="shop", next_attempt_at=due)
        add_rows(engine, 2, f"d{turn}-", next_attempt_at=due)

    batches = [claim(engine, now, limit=10) for _ in range(4)]

    assert [tenants_of(engine, batch.ids) for batch in batches[:3]] == [
        {"clinic"},
        {"shop"},
        {""},
    ]
    assert sorted(len(batch.ids) for batch in batches[:3]) == [6, 6, 6]
    assert batches[3].ids == []


def test_an_urgent_row_names_the_batchs_tenant_before_an_older_normal_one(engine: Engine) -> None:
    now = datetime.now(UTC)
    add_rows(engine, 3, "n", tenant="shop", next_attempt_at=now - timedelta(hours=1))
    urgent = add_rows(engine, 1, "u", tenant="clinic", priority=0, next_attempt_at=now)
    add_rows(engine, 2, "c", tenant="clinic", next_attempt_at=now - timedelta(minutes=1))

    first = claim(engine, now, limit=10)

    assert first.ids == urgent  # an urgent batch goes alone
    second = claim(engine, now, limit=10)
    assert len(second.ids) == 3 and tenants_of(engine, second.ids) == {"shop"}
    assert tenants_of(engine, claim(engine, now, limit=10).ids) == {"clinic"}
