"""The dispatcher's per-message outcomes: accepted, transient, permanent and missing answers.

Every test drives ``Dispatcher.dispatch_once`` (or ``dispatch``) in-process (no Celery) with an
injected clock; waiting out a backoff, a lease or a Retry-After is a move of the clock. Rows are
compared with the sandbox's ledger: what Wiraya would hold.
"""

from __future__ import annotations

from datetime import timedelta

from models import Status
from tests.integration.dispatch.harness import (
    OMITTED_ONCE,
    PERMANENT,
    TRANSIENT_FOREVER,
    TRANSIENT_TWICE,
    Outbox,
    recipient,
)


def test_success_stores_the_sandbox_tracking_id(outbox: Outbox) -> None:
    ids = outbox.enqueue_ordinary(3)
    dispatcher = outbox.dispatcher()

    summary = dispatcher.dispatch_once()

    assert (summary.state, summary.claimed, summary.accepted, summary.requests) == ("sent", 3, 3, 1)
    ledger = outbox.sandbox.ledger()
    rows = outbox.rows()
    for client_message_id in ids:
        row, entry = rows[client_message_id], ledger[client_message_id]
        assert row.status == Status.ACCEPTED
        assert row.tracking_id == entry.tracking_id
        assert row.tracking_id is not None and len(row.tracking_id) == 32
        assert entry.times_received == 1
        assert row.attempts == 1
        assert row.locked_until is None and row.last_error is None
        assert row.accepted_at == outbox.clock.now
    assert dispatcher.dispatch_once().state == "idle"
    assert outbox.sandbox.request_count == 1


def test_transient_error_is_retried_with_backoff_then_accepted(outbox: Outbox) -> None:
    [message] = outbox.enqueue(TRANSIENT_TWICE)
    dispatcher = outbox.dispatcher()  # backoff from 1 s
    base = timedelta(seconds=1)

    for attempt in (1, 2):
        summary = dispatcher.dispatch_once()
        assert (summary.retried, summary.accepted, summary.failed) == (1, 0, 0)
        row = outbox.row(message)
        assert row.status == Status.PENDING
        assert row.attempts == attempt
        assert row.last_error == "operator temporarily unavailable (sandbox test recipient)"
        # equal jitter: between half and all of base * 2^(attempt-1)
        ceiling = base * 2 ** (attempt - 1)
        now = outbox.clock.now
        assert now + ceiling / 2 <= row.next_attempt_at <= now + ceiling
        assert dispatcher.dispatch_once().state == "idle"  # not due before its backoff
        outbox.clock.move_to(row.next_attempt_at)

    summary = dispatcher.dispatch_once()

    assert summary.accepted == 1
    row, entry = outbox.row(message), outbox.sandbox.entry(message)
    assert entry is not None
    assert (row.status, row.attempts, row.last_error) == (Status.ACCEPTED, 3, None)
    assert row.tracking_id == entry.tracking_id
    assert entry.times_received == 3
    assert outbox.sandbox.request_count == 3


def test_transient_forever_fails_after_max_attempts(pg_outbox: Outbox) -> None:
    [message] = pg_outbox.enqueue(TRANSIENT_FOREVER)
    dispatcher = pg_outbox.dispatcher(OUTBOX_MAX_ATTEMPTS=3)

    for attempt in (1, 2):
        assert dispatcher.dispatch_once().retried == 1
        assert (pg_outbox.row(message).status, pg_outbox.row(message).attempts) == (
            Status.PENDING,
            attempt,
        )
        pg_outbox.clock.advance(61)  # past the largest backoff
    summary = dispatcher.dispatch_once()

    assert summary.failed == 1
    row = pg_outbox.row(message)
    assert (row.status, row.attempts) == (Status.FAILED, 3)
    assert row.last_error == (
        "gave up after 3 attempts: operator temporarily unavailable (sandbox test recipient)"
    )
    pg_outbox.clock.advance(3600)
    assert dispatcher.dispatch_once().state == "idle"
    entry = pg_outbox.sandbox.entry(message)
    assert entry is not None and entry.times_received == 3


def test_permanent_failure_is_stored_and_never_resent(pg_outbox: Outbox) -> None:
    refused, fine = pg_outbox.enqueue(PERMANENT, recipient(1))
    dispatcher = pg_outbox.dispatcher()

    summary = dispatcher.dispatch_once()

    assert (summary.accepted, summary.failed, summary.retried) == (1, 1, 0)
    row = pg_outbox.row(refused)
    assert (row.status, row.attempts, row.tracking_id) == (Status.FAILED, 1, None)
    assert row.last_error == "rejected: recipient is blocked (sandbox test recipient ...0000001)"
    for _ in range(3):
        pg_outbox.clock.advance(3600)
        assert dispatcher.dispatch_once().state == "idle"
    entry = pg_outbox.sandbox.entry(refused)
    assert entry is not None and entry.times_received == 1
    assert pg_outbox.sandbox.request_count == 1
    assert pg_outbox.row(fine).status == Status.ACCEPTED


def test_message_missing_from_results_is_resent_under_the_same_id(pg_outbox: Outbox) -> None:
    missing, fine = pg_outbox.enqueue(OMITTED_ONCE, recipient(1))
    dispatcher = pg_outbox.dispatcher()

    summary = dispatcher.dispatch_once()

    assert (summary.accepted, summary.retried) == (1, 1)
    row = pg_outbox.row(missing)
    assert (row.status, row.attempts, row.tracking_id) == (Status.PENDING, 1, None)
    assert row.last_error is not None and "missing" in row.last_error
    first = pg_outbox.sandbox.entry(missing)
    assert first is not None and first.tracking_id is not None  # the sandbox did enqueue it

    pg_outbox.clock.move_to(row.next_attempt_at)
    assert dispatcher.dispatch_once().accepted == 1

    row, entry = pg_outbox.row(missing), pg_outbox.sandbox.entry(missing)
    assert entry is not None
    assert (row.status, row.attempts) == (Status.ACCEPTED, 2)
    assert row.tracking_id == first.tracking_id == entry.tracking_id
    assert entry.times_received == 2
    assert set(pg_outbox.sandbox.ledger()) == {missing, fine}  # no new clientMessageId
