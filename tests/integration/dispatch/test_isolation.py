"""One message that fails every request it is in: isolated, its batch-mates sent at once.

The sandbox answers 500 to any request holding its poison recipient (…0000006) and accepts
requests without it: the message, not the API, is at fault.

Every test drives ``Dispatcher.dispatch_once`` in-process with an injected clock.
"""

from __future__ import annotations

from models import Status
from sandbox.recipients import POISON_SUFFIX
from tests.integration.dispatch.harness import Outbox, recipient

POISON = "4670" + POISON_SUFFIX


def test_a_poison_message_is_isolated_and_its_batch_mates_go_out_at_once(outbox: Outbox) -> None:
    outbox.enqueue_ordinary(5)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=16)
    assert dispatcher.dispatch_once().accepted == 5  # the API answers
    mates = outbox.enqueue(*(recipient(100 + n) for n in range(7)))
    [poison] = outbox.enqueue(POISON)
    mates += outbox.enqueue(*(recipient(200 + n) for n in range(8)))

    summary = dispatcher.dispatch_once()

    assert (summary.state, summary.claimed, summary.accepted, summary.retried) == (
        "sent",
        16,
        15,
        1,
    )
    assert summary.requests <= 1 + 2 * 4  # the batch, then two requests per halving
    row = outbox.row(poison)
    assert (row.status, row.attempts) == (Status.PENDING, 1)  # alone, it spends an attempt
    assert row.last_error is not None and row.last_error.startswith("isolated: ")
    assert "ServerError: HTTP 500" in row.last_error
    assert {outbox.row(m).status for m in mates} == {Status.ACCEPTED}
    gate = outbox.gate()
    assert (gate.failures, gate.paused_until) == (0, None)  # nobody else was held back


def test_alone_again_it_spends_its_attempts_and_fails_with_the_reason(outbox: Outbox) -> None:
    outbox.enqueue_ordinary(2)
    dispatcher = outbox.dispatcher(OUTBOX_MAX_ATTEMPTS=3)
    assert dispatcher.dispatch_once().accepted == 2  # the API answers
    [poison] = outbox.enqueue(POISON)
    outbox.enqueue_ordinary(1)
    assert dispatcher.dispatch_once().retried == 1  # isolated within its first batch

    for attempt in (2, 3):  # nothing else is due: it is claimed alone
        outbox.clock.move_to(outbox.row(poison).next_attempt_at)
        summary = dispatcher.dispatch_once()
        assert (summary.claimed, summary.requests) == (1, 1)
        assert outbox.gate().failures == 0  # not held against the API: it answered before
        row = outbox.row(poison)
        assert row.attempts == attempt

    assert row.status == Status.FAILED
    assert row.last_error is not None and row.last_error.startswith("gave up after 3 attempts: ")
    assert "isolated: " in row.last_error
    entry = outbox.sandbox.entry(poison)
    assert entry is None  # never accepted by the API


def test_during_an_outage_nothing_is_isolated_and_nothing_spends_attempts(
    outbox: Outbox,
) -> None:
    outbox.enqueue_ordinary(3)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=8)
    assert dispatcher.dispatch_once().accepted == 3
    messages = outbox.enqueue_ordinary(8)
    outbox.sandbox.set_faults(outage=True)

    summary = dispatcher.dispatch_once()

    # A 503 says the API is unavailable: the API's at once, though it answered just before.
    assert (summary.state, summary.requests, summary.released) == ("alarm", 1, 8)
    assert {(outbox.row(m).status, outbox.row(m).attempts) for m in messages} == {
        (Status.PENDING, 0)
    }
    assert outbox.gate().failures == 1
    outbox.clock.move_to(outbox.gate().paused_until)
    again = dispatcher.dispatch_once()
    assert (again.state, again.requests) == ("alarm", 1)  # no answer since: no halves now
    assert {outbox.row(m).attempts for m in messages} == {0}
