"""Lanes and lifetimes: urgent rows overtake a backlog, and no message is sent after its expiry.

Rows are inserted by plain SQL with the optional ``priority`` and ``expires_at`` columns, as
any language can. Every test drives ``Dispatcher.dispatch_once`` with an injected clock.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import text

from models import Status
from tests.integration.dispatch.harness import ALPHA, Outbox, recipient


def insert(
    outbox: Outbox,
    client_message_id: str,
    *,
    priority: int = 1,
    expires_at: datetime | None = None,
) -> None:
    cast = "CAST(:content AS jsonb)" if outbox.engine.dialect.name == "postgresql" else ":content"
    with outbox.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox_messages "
                "(client_message_id, recipient, content, priority, expires_at) "
                f"VALUES (:id, :to, {cast}, :priority, :expires_at)"
            ),
            {
                "id": client_message_id,
                "to": recipient(len(client_message_id) * 7 + priority),
                "content": json.dumps(ALPHA),
                "priority": priority,
                "expires_at": None if expires_at is None else expires_at.isoformat(" "),
            },
        )


def test_an_urgent_row_inserted_during_a_bulk_drain_goes_alone_in_the_next_batch(
    outbox: Outbox,
) -> None:
    for number in range(30):
        insert(outbox, f"bulk-{number:02d}", priority=2)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=10)
    first = dispatcher.dispatch_once()
    assert dict(first.by_priority) == {"bulk": 10}

    insert(outbox, "code-1", priority=0)
    insert(outbox, "alert-1", priority=1)
    outbox.clock.catch_up()
    second = dispatcher.dispatch_once()

    third = dispatcher.dispatch_once()

    # The urgent batch holds nothing else: its request and record wait for no bulk row.
    assert dict(second.by_priority) == {"urgent": 1}
    assert outbox.row("code-1").status == Status.ACCEPTED
    assert dict(third.by_priority) == {"normal": 1, "bulk": 9}
    assert outbox.row("alert-1").status == Status.ACCEPTED


def test_a_message_past_its_expiry_fails_unsent(outbox: Outbox) -> None:
    now = outbox.clock.now
    insert(outbox, "late", expires_at=now - timedelta(seconds=1))
    insert(outbox, "fresh", expires_at=now + timedelta(minutes=5))

    summary = outbox.dispatcher().dispatch_once()

    assert (summary.accepted, summary.failed) == (1, 1)
    late = outbox.row("late")
    assert (late.status, late.attempts) == (Status.FAILED, 0)
    assert late.last_error is not None and late.last_error.startswith("expired: not accepted by")
    assert set(outbox.sandbox.ledger()) == {"fresh"}


def test_no_request_is_made_that_could_end_after_a_messages_expiry(outbox: Outbox) -> None:
    now = outbox.clock.now
    insert(outbox, "in-a-moment", expires_at=now + timedelta(milliseconds=200))
    insert(outbox, "in-3s", expires_at=now + timedelta(seconds=3))  # under the 5 s timeout
    insert(outbox, "in-an-hour", expires_at=now + timedelta(hours=1))
    insert(outbox, "never")

    summary = outbox.dispatcher().dispatch_once()

    # Too soon for any request: failed unsent. Within the timeout: a request of its own whose
    # deadline is its expiry, first. The rest: a request with the full timeout.
    assert (summary.accepted, summary.failed, summary.requests) == (3, 1, 2)
    moment = outbox.row("in-a-moment")
    assert (moment.status, moment.attempts) == (Status.FAILED, 0)
    assert moment.last_error is not None
    assert moment.last_error.startswith("expired: no request could end before its expires_at")
    assert set(outbox.sandbox.ledger()) == {"in-3s", "in-an-hour", "never"}


def test_a_message_that_expires_during_an_outage_is_never_sent(outbox: Outbox) -> None:
    outbox.enqueue_ordinary(2)
    dispatcher = outbox.dispatcher()
    assert dispatcher.dispatch_once().accepted == 2
    now = outbox.clock.now
    insert(outbox, "code", priority=0, expires_at=now + timedelta(seconds=30))
    outbox.sandbox.set_faults(outage=True)
    for _ in range(3):  # the outage opens the circuit
        dispatcher.dispatch_once()
        outbox.clock.move_to(outbox.gate().paused_until or outbox.clock.now)
    outbox.clock.move_to(now + timedelta(seconds=31))
    outbox.sandbox.set_faults(outage=False)
    outbox.enqueue_ordinary(1)  # something that can still be sent: the probe

    outbox.clock.move_to(max(outbox.clock.now, outbox.gate().next_probe_at or now))
    summary = dispatcher.dispatch_once()

    code = outbox.row("code")
    assert code.status == Status.FAILED and code.last_error is not None
    assert code.last_error.startswith("expired: ")
    assert "code" not in outbox.sandbox.ledger()
    assert summary.accepted == 1  # the probe was the message that could be sent


def test_under_a_request_rate_urgent_rows_fill_their_batch_from_the_other_lanes(
    outbox: Outbox,
) -> None:
    # With a rate in force a request is what is scarce: a batch of one code would spend one.
    for number in range(30):
        insert(outbox, f"bulk-{number:02d}", priority=2)
    insert(outbox, "code-1", priority=0)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=10, OUTBOX_RATE_LIMIT=50)

    summary = dispatcher.dispatch_once()

    assert dict(summary.by_priority) == {"urgent": 1, "bulk": 9}
    assert outbox.row("code-1").status == Status.ACCEPTED


def test_a_dead_workers_rows_come_back_beside_a_steady_urgent_flow(outbox: Outbox) -> None:
    insert(outbox, "code-dead", priority=0)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=10)
    assert len(outbox.claim_and_die(dispatcher)) == 1  # an urgent code under a dead worker's lease
    outbox.clock.advance(dispatcher.settings.lease.total_seconds() + 1)

    # Every claim from now on finds a new code due: the lapsed lease must not wait for a lull.
    for number in range(3):
        insert(outbox, f"code-{number}", priority=0)
        outbox.clock.catch_up()
        dispatcher.dispatch_once()

    row = outbox.row("code-dead")
    assert (row.status, row.attempts) == (Status.ACCEPTED, 2)
