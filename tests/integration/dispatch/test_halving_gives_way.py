"""A batch halving its way down to the API's item limit gives way to an urgent row due: the rest
goes back unspent, under its claim's guard, and no row is lost or sent twice."""

from __future__ import annotations

from models import Status
from tests.integration.dispatch.harness import Outbox, WhileSending
from tests.integration.dispatch.test_lanes import insert
from worker.dispatch.summary import BatchSummary


def test_the_rest_of_a_halving_batch_goes_back_unspent_for_an_urgent_row(outbox: Outbox) -> None:
    for number in range(8):
        insert(outbox, f"bulk-{number}", priority=2)
    outbox.sandbox.set_faults(max_batch=2)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=8)
    arrived: list[bool] = []

    def urgent_arrives_once() -> BatchSummary:
        if not arrived:
            insert(outbox, "code-1", priority=0)
            outbox.clock.catch_up()
            arrived.append(True)
        return BatchSummary()

    dispatcher.sender = WhileSending(dispatcher.sender, urgent_arrives_once)

    first = dispatcher.dispatch_once()

    rows = outbox.rows()
    sent = sorted(cmid for cmid, row in rows.items() if row.status == Status.ACCEPTED)
    back = sorted(cmid for cmid, row in rows.items() if row.status == Status.PENDING)
    assert first.accepted == 4 and sent == [f"bulk-{n}" for n in range(4)]
    assert back == [*(f"bulk-{n}" for n in range(4, 8)), "code-1"]
    for cmid in back:  # unspent: no attempt, no lease, no claim left on them, never sent
        row = rows[cmid]
        assert (row.attempts, row.locked_until, row.tracking_id) == (0, None, None)
        assert outbox.sandbox.entry(cmid) is None

    second = dispatcher.dispatch_once()
    assert dict(second.by_priority) == {"urgent": 1}  # the code, alone and next
    outbox.drain(dispatcher)
    ledger = outbox.sandbox.ledger()
    assert {row.status for row in outbox.rows().values()} == {Status.ACCEPTED}
    assert {cmid: entry.times_received for cmid, entry in ledger.items()} == dict.fromkeys(
        outbox.rows(), 1
    )
