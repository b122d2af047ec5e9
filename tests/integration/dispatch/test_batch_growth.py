"""Batch size learnt upwards: full batches the API takes grow the next, up to the cap.

The API's item limit is undocumented: batches start at OUTBOX_BATCH_SIZE, double past each
size the API has taken whole (a shared record, so every worker grows together), stop at
OUTBOX_BATCH_SIZE_MAX, and stop below the first size the API refuses as too large.
"""

from __future__ import annotations

from models import Status
from tests.integration.dispatch.harness import Outbox


def _claims(outbox: Outbox, dispatches: int, **overrides: object) -> list[int]:
    dispatcher = outbox.dispatcher(**overrides)
    return [dispatcher.dispatch_once().claimed for _ in range(dispatches)]


def test_full_batches_taken_grow_the_next_up_to_the_cap(pg_outbox: Outbox) -> None:
    messages = pg_outbox.enqueue_ordinary(120)

    claims = _claims(pg_outbox, 6, OUTBOX_BATCH_SIZE=10, OUTBOX_BATCH_SIZE_MAX=35)

    assert claims == [10, 20, 35, 35, 20, 0]
    assert pg_outbox.gate().batch_proven == 35
    assert {pg_outbox.row(m).status for m in messages} == {Status.ACCEPTED}
    assert pg_outbox.sandbox.request_count == 5


def test_a_new_dispatcher_starts_at_the_size_already_proven(pg_outbox: Outbox) -> None:
    pg_outbox.enqueue_ordinary(100)
    grows = {"OUTBOX_BATCH_SIZE": 10, "OUTBOX_BATCH_SIZE_MAX": 500}
    assert _claims(pg_outbox, 2, **grows) == [10, 20]

    later = _claims(pg_outbox, 1, **grows)  # another worker, or a restart

    assert later == [40]


def test_growth_stops_below_the_first_size_refused(outbox: Outbox) -> None:
    outbox.sandbox.set_faults(max_batch=25)
    messages = outbox.enqueue_ordinary(140)

    claims = _claims(outbox, 6, OUTBOX_BATCH_SIZE=10, OUTBOX_BATCH_SIZE_MAX=100)

    # 10 and 20 are taken; 40 is refused, split in two twenties and remembered: 20 from then on
    assert claims == [10, 20, 40, 20, 20, 20]
    assert outbox.sandbox.status_count(400) == 1
    gate = outbox.gate()
    assert (gate.batch_limit, gate.batch_proven) == (20, 20)
    assert {outbox.row(m).status for m in messages[:110]} == {Status.ACCEPTED}


def test_partial_batches_do_not_grow_the_size(pg_outbox: Outbox) -> None:
    dispatcher = pg_outbox.dispatcher(OUTBOX_BATCH_SIZE=10, OUTBOX_BATCH_SIZE_MAX=500)
    for _ in range(3):
        pg_outbox.enqueue_ordinary(4)
        assert dispatcher.dispatch_once().claimed == 4

    pg_outbox.enqueue_ordinary(30)

    assert dispatcher.dispatch_once().claimed == 10


def test_no_cap_above_the_configured_size_keeps_batches_fixed(pg_outbox: Outbox) -> None:
    pg_outbox.enqueue_ordinary(40)

    assert _claims(pg_outbox, 4, OUTBOX_BATCH_SIZE=10, OUTBOX_BATCH_SIZE_MAX=10) == [10] * 4
