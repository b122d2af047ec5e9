"""Lane floors: a process's next claim of a lane starts after the rows its last claim took,
and a row below a floor is still claimed: by the first claim that comes back short, or by
the periodic claim from the head of each lane.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, update

from models import Priority, Status
from models.outbox import outbox_messages as outbox
from tests.integration.dispatch.harness import outbox_statements
from tests.integration.dispatch.test_claim_and_record import LEASE, NOW, add_rows, gate_version
from worker.dispatch import claim as claims
from worker.dispatch.floors import FULL_SCAN_EVERY, LaneFloors


def claim_ids(
    engine: Engine, floors: LaneFloors, limit: int, tenant: str | None = None
) -> list[int]:
    with engine.begin() as connection:
        rows = claims.claim(
            connection,
            limit=limit,
            lease=LEASE,
            now=NOW,
            version=gate_version(connection),
            token=claims.new_token(),
            floors=floors,
            tenant=tenant,
        )
    return [row.id for row in rows]


def release(engine: Engine, ids: list[int]) -> None:
    """As a batch given back unsent: pending again, its due time unchanged."""
    with engine.begin() as connection:
        connection.execute(
            update(outbox)
            .where(outbox.c.id.in_(ids))
            .values(status=Status.PENDING, locked_until=None, claim_token=None)
        )


def test_the_next_claim_starts_after_the_rows_the_last_one_took(engine: Engine) -> None:
    due = NOW - timedelta(minutes=1)
    ids = add_rows(engine, 20, next_attempt_at=due)
    floors = LaneFloors()
    assert claim_ids(engine, floors, 5) == ids[:5]
    release(engine, ids[:5])  # older than the rest, but below this process's floor

    assert claim_ids(engine, floors, 5) == ids[5:10]
    assert floors.ends[Priority.NORMAL][1] == ids[9]


def test_a_claim_short_above_the_floor_takes_the_rest_from_the_head(engine: Engine) -> None:
    ids = add_rows(engine, 8, next_attempt_at=NOW - timedelta(minutes=1))
    floors = LaneFloors()
    assert claim_ids(engine, floors, 5) == ids[:5]
    release(engine, ids[:2])
    # Three rows lie above the floor, two below it: a batch of five takes all of them.
    assert sorted(claim_ids(engine, floors, 5)) == sorted(ids[5:] + ids[:2])


def test_a_row_due_before_the_floor_waits_for_at_most_the_periodic_claim_from_the_head(
    engine: Engine,
) -> None:
    late = add_rows(engine, 1, "late", next_attempt_at=NOW - timedelta(hours=1))
    add_rows(engine, 5 * (FULL_SCAN_EVERY + 2), next_attempt_at=NOW - timedelta(minutes=1))
    floors = LaneFloors()
    floors.ends[Priority.NORMAL] = (NOW - timedelta(minutes=30), 0)  # as if it were past it
    floors.claims = 1

    claimed: list[int] = []
    for _ in range(FULL_SCAN_EVERY):
        claimed += claim_ids(engine, floors, 5)
        if late[0] in claimed:
            break
    assert late[0] in claimed


def test_a_claim_that_comes_back_short_leaves_no_floor_so_the_next_reads_once(
    engine: Engine,
) -> None:
    """A lane drained to its end holds nothing above a floor: at a trickle (a row or two per
    claim) every claim would read past the floor, come back short and read from the head again."""
    ids = add_rows(engine, 7, next_attempt_at=NOW - timedelta(minutes=1))
    floors = LaneFloors()
    assert claim_ids(engine, floors, 5) == ids[:5]
    assert floors.ends  # a full claim: the next starts above it

    assert claim_ids(engine, floors, 5) == ids[5:]  # short: the lane's due rows are all taken
    assert not floors.ends

    later = add_rows(engine, 1, "later", next_attempt_at=NOW - timedelta(minutes=1))
    with outbox_statements(engine) as statements:
        assert claim_ids(engine, floors, 5) == later
    assert len(statements) == 1


def test_a_short_claim_for_a_tenant_chosen_by_turns_keeps_the_floors(engine: Engine) -> None:
    """The clinic's rows running out says nothing of the shop's: the floors stay (moved past
    the rows the clinic's claim took), where a claim of whoever comes first clears them."""
    due = NOW - timedelta(minutes=1)
    shop = add_rows(engine, 10, "shop", next_attempt_at=due, tenant="shop")
    clinic = add_rows(engine, 2, "clinic", next_attempt_at=due, tenant="clinic")
    floors = LaneFloors()
    assert claim_ids(engine, floors, 5, tenant="shop") == shop[:5]
    assert claim_ids(engine, floors, 5, tenant="clinic") == clinic
    assert floors.ends[Priority.NORMAL][1] == max(shop[4], clinic[1])
