"""Leases: a stale worker writes nothing, a dead one's rows come back, two never share a row.

Every test drives ``Dispatcher.dispatch_once`` (or ``dispatch``) in-process (no Celery) with an
injected clock; waiting out a backoff, a lease or a Retry-After is a move of the clock. Rows are
compared with the sandbox's ledger: what Wiraya would hold.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from models import Status
from sandbox.faults import Faults
from sandbox.testing import running_sandbox
from tests.integration.dispatch.harness import (
    Outbox,
    WhileSending,
)
from worker.dispatch.dispatcher import BatchSummary, Dispatcher
from worker.wiraya.results import Answered, Communication


def test_a_stale_worker_writes_nothing_after_another_claimed_its_rows(pg_outbox: Outbox) -> None:
    messages = pg_outbox.enqueue_ordinary(3)
    rival = pg_outbox.dispatcher()

    def lease_ends_and_rival_takes_over() -> BatchSummary:
        pg_outbox.clock.advance(rival.settings.lease.total_seconds() + 1)
        return rival.dispatch_once()

    with running_sandbox(Faults(outage=True)) as down:
        # The stale worker's answer, when it finally comes, is a 503: were its results
        # written, the rows would go back to pending although the rival delivered them.
        stale = pg_outbox.dispatcher(down.url)
        takeover = WhileSending(stale.sender, lease_ends_and_rival_takes_over)
        stale.sender = takeover

        summary = stale.dispatch_once()

    [rival_summary] = takeover.seen
    assert (rival_summary.claimed, rival_summary.accepted) == (3, 3)
    assert (summary.claimed, summary.requests) == (3, 1)
    assert (summary.accepted, summary.released, summary.retried, summary.failed) == (0, 0, 0, 0)
    ledger = pg_outbox.sandbox.ledger()
    for client_message_id in messages:
        row = pg_outbox.row(client_message_id)
        assert (row.status, row.last_error) == (Status.ACCEPTED, None)
        assert row.attempts == 2  # the stale claim and the rival's
        assert row.tracking_id == ledger[client_message_id].tracking_id
        assert ledger[client_message_id].times_received == 1


@pytest.mark.parametrize("died", ["before sending", "after sending"])
def test_a_dead_workers_rows_are_claimed_again_after_the_lease(
    pg_outbox: Outbox, died: str
) -> None:
    messages = pg_outbox.enqueue_ordinary(3)
    dispatcher = pg_outbox.dispatcher()
    claimed = pg_outbox.claim_and_die(dispatcher)
    assert [row.client_message_id for row in claimed] == messages
    if died == "after sending":  # the request reached the API, the results were never written
        batch = [
            Communication(str(r.client_message_id), str(r.recipient), json.loads(str(r.content)))
            for r in claimed
        ]
        assert isinstance(dispatcher.sender.send(batch), Answered)
    first_ledger = pg_outbox.sandbox.ledger()

    pg_outbox.clock.advance(dispatcher.settings.lease.total_seconds() - 1)
    assert dispatcher.dispatch_once().state == "idle"  # still under lease
    pg_outbox.clock.advance(1)  # the lease ends now
    summary = dispatcher.dispatch_once()

    assert (summary.claimed, summary.accepted) == (3, 3)
    assert dispatcher.dispatch_once().state == "idle"
    ledger = pg_outbox.sandbox.ledger()
    for client_message_id in messages:
        row, entry = pg_outbox.row(client_message_id), ledger[client_message_id]
        assert (row.status, row.attempts, row.locked_until) == (Status.ACCEPTED, 2, None)
        assert row.tracking_id == entry.tracking_id  # one tracking id per message
        if died == "after sending":
            assert entry.times_received == 2  # resent under the same id: de-duplicated
            assert entry.tracking_id == first_ledger[client_message_id].tracking_id
        else:
            assert entry.times_received == 1
    assert len(ledger) == 3


def test_two_dispatchers_drain_concurrently_without_sending_any_message_twice(
    pg_outbox: Outbox,
) -> None:
    total = 2_000
    messages = pg_outbox.enqueue_ordinary(total)
    dispatchers = [pg_outbox.dispatcher(OUTBOX_BATCH_SIZE=25) for _ in range(2)]
    start = threading.Barrier(len(dispatchers))

    def drain(dispatcher: Dispatcher) -> list[BatchSummary]:
        start.wait(timeout=10)
        return pg_outbox.drain(dispatcher, limit=total)

    with ThreadPoolExecutor(len(dispatchers)) as pool:
        results = [
            future.result(timeout=100) for future in [pool.submit(drain, d) for d in dispatchers]
        ]

    claimed = [sum(s.claimed for s in summaries) for summaries in results]
    assert sum(claimed) == total
    assert all(share > 0 for share in claimed), claimed  # both really worked
    assert sum(s.accepted for summaries in results for s in summaries) == total
    ledger = pg_outbox.sandbox.ledger()
    assert len(ledger) == total
    assert {entry.times_received for entry in ledger.values()} == {1}
    rows = pg_outbox.rows()
    assert {(row.status, row.attempts) for row in rows.values()} == {(Status.ACCEPTED, 1)}
    assert all(rows[m].tracking_id == ledger[m].tracking_id for m in messages)
