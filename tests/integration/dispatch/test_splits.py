"""Splitting a batch: a 400 or a too-large answer, within the lease, keeping what was answered.

Every test drives ``Dispatcher.dispatch_once`` (or ``dispatch``) in-process (no Celery) with an
injected clock; waiting out a backoff, a lease or a Retry-After is a move of the clock. Rows are
compared with the sandbox's ledger: what Wiraya would hold.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta

import pytest
from sqlalchemy import text

from models import Status
from sandbox.faults import Faults, Validation
from tests.integration.dispatch.harness import (
    ALPHA,
    Clock,
    Outbox,
    WhileSending,
    outage_from,
    outbox_statements,
    recipient,
)
from worker.dispatch.dispatcher import BatchSummary
from worker.dispatch.sending import Sender
from worker.wiraya.codec import encode_request
from worker.wiraya.results import Communication, SendResult, TransportError

REFUSED_BY_API = "46700000005"


VALID_CONTENT = {"$type": "SMSProject", "projectId": 12, "placeholders": ["Jane"]}


def _body_limit_for_four() -> int:
    """A body size (bytes) that takes four of the test's messages but not five."""
    four = [Communication(f"m{n}", recipient(n), ALPHA) for n in range(10, 14)]
    return len(encode_request(four))


def test_bad_request_splits_the_batch_and_fails_only_the_bad_message(outbox: Outbox) -> None:
    good = outbox.enqueue_ordinary(3)
    outbox.insert_raw("refused-by-api", REFUSED_BY_API, VALID_CONTENT)
    good += outbox.enqueue_ordinary(4)
    dispatcher = outbox.dispatcher()

    with outbox_statements(outbox.engine) as statements:
        summary = dispatcher.dispatch_once()

    assert (summary.claimed, summary.accepted, summary.failed) == (8, 7, 1)
    # [8] 400 -> [4] 400 -> [2] ok, [2] 400 -> [1] ok, [1] 400 (fails it); [4] ok
    assert outbox.sandbox.status_count(400) == 4
    assert outbox.sandbox.status_count(200) == 3
    assert summary.requests == 7
    assert len(statements) <= 3  # splitting adds requests, not statements
    bad = outbox.row("refused-by-api")
    assert (bad.status, bad.attempts, bad.tracking_id) == (Status.FAILED, 1, None)
    assert bad.last_error is not None
    assert bad.last_error.startswith("rejected: Invalid input format: communications[0]")
    assert "refused-by-api" in bad.last_error
    ledger, rows = outbox.sandbox.ledger(), outbox.rows()
    assert set(ledger) == set(good)
    for client_message_id in good:
        row = rows[client_message_id]
        assert (row.status, row.attempts) == (Status.ACCEPTED, 1)
        assert row.tracking_id == ledger[client_message_id].tracking_id
        assert ledger[client_message_id].times_received == 1
    gate = outbox.gate()
    assert (gate.failures, gate.paused_until, gate.batch_limit) == (0, None, None)


def test_per_message_validation_fails_the_bad_message_without_splitting(
    outbox: Outbox,
) -> None:
    outbox.sandbox.set_faults(validation=Validation.MESSAGE)
    good = outbox.enqueue_ordinary(3)
    outbox.insert_raw("refused-by-api", REFUSED_BY_API, VALID_CONTENT)

    summary = outbox.dispatcher().dispatch_once()

    assert (summary.requests, summary.accepted, summary.failed) == (1, 3, 1)
    bad = outbox.row("refused-by-api")
    assert bad.status == Status.FAILED
    assert bad.last_error == (
        "rejected: recipient: not a valid mobile number (sandbox test recipient ...0000005)"
    )
    assert {outbox.row(client_message_id).status for client_message_id in good} == {Status.ACCEPTED}


@pytest.mark.parametrize(
    ("faults", "refusal"),
    [
        (Faults(max_batch=4), 400),  # {"bulkItemLimitExceeded": true}
        (Faults(max_body_bytes=_body_limit_for_four()), 413),  # a proxy's HTML 413
    ],
    ids=["400 bulkItemLimitExceeded", "413"],
)
def test_too_large_batch_is_split_and_the_smaller_size_remembered(
    outbox: Outbox, faults: Faults, refusal: int
) -> None:
    outbox.sandbox.set_faults(faults)
    first = outbox.enqueue_ordinary(10)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=10)

    summary = dispatcher.dispatch_once()

    assert (summary.claimed, summary.accepted, summary.failed, summary.retried) == (10, 10, 0, 0)
    assert summary.alarm is None
    # [10] too large -> [5] too large -> [2] ok, [3] ok; [5] too large -> [2] ok, [3] ok
    assert outbox.sandbox.status_count(refusal) == 3
    assert outbox.sandbox.status_count(200) == 4
    rows, ledger = outbox.rows(), outbox.sandbox.ledger()
    for client_message_id in first:
        row = rows[client_message_id]
        assert (row.status, row.attempts) == (Status.ACCEPTED, 1)  # no attempt spent on splits
        assert row.tracking_id == ledger[client_message_id].tracking_id
    gate = outbox.gate()
    assert gate.batch_limit is not None and 1 <= gate.batch_limit <= 4
    assert (gate.failures, gate.paused_until) == (0, None)  # not a backend failure

    outbox.enqueue_ordinary(10)
    outbox.clock.catch_up()
    summary = dispatcher.dispatch_once()

    assert summary.claimed == gate.batch_limit
    assert (summary.requests, summary.accepted) == (1, gate.batch_limit)
    assert outbox.sandbox.status_count(refusal) == 3  # no new refusal: the limit was kept


def test_a_split_that_would_outlast_the_lease_stops_and_releases_the_rest(
    outbox: Outbox,
) -> None:
    outbox.sandbox.set_faults(max_batch=4)
    messages = outbox.enqueue_ordinary(10)
    dispatcher = outbox.dispatcher(OUTBOX_LEASE_SECONDS=30, WIRAYA_TIMEOUT_SECONDS=5)
    claimed_at = outbox.clock.now

    def ten_seconds_pass() -> BatchSummary:  # each request is slow
        outbox.clock.advance(10)
        return BatchSummary()

    dispatcher.sender = WhileSending(dispatcher.sender, ten_seconds_pass)

    summary = dispatcher.dispatch_once()

    # Requests start at +10 s ([10] too large), +20 s ([5] too large), +30 s ([2] ok); the
    # next could not start before the lease (+30 s) minus the timeout (5 s): the rest is
    # released for another worker, spending no attempt, instead of sent by a worker whose
    # lease may end mid-request.
    assert summary.requests == 3
    assert (summary.accepted, summary.released, summary.failed) == (2, 8, 0)
    rows = [outbox.row(m) for m in messages]
    assert [(r.status, r.attempts) for r in rows[:2]] == [(Status.ACCEPTED, 1)] * 2
    assert [(r.status, r.attempts) for r in rows[2:]] == [(Status.PENDING, 0)] * 8
    assert all(r.next_attempt_at <= outbox.clock.now for r in rows[2:])  # due at once
    assert all(r.locked_until is None for r in rows)
    assert outbox.clock.now > claimed_at + timedelta(seconds=25)
    assert set(outbox.sandbox.ledger()) == set(messages[:2])


def test_a_failure_mid_split_keeps_the_answers_already_received(outbox: Outbox) -> None:
    outbox.sandbox.set_faults(max_batch=4)
    messages = outbox.enqueue_ordinary(10)
    dispatcher = outbox.dispatcher()
    dispatcher.sender = WhileSending(dispatcher.sender, outage_from(outbox.sandbox, 5))

    summary = dispatcher.dispatch_once()

    # [10] too large, [5] too large, [2] ok, [3] ok, [5] 503: a 503 says the API is
    # unavailable, so it is the API, not a message, though the API answered just before. The
    # first five are accepted, the last five go back to pending with their attempt given back.
    assert (summary.state, summary.requests) == ("alarm", 5)
    assert (summary.accepted, summary.released, summary.failed) == (5, 5, 0)
    ledger = outbox.sandbox.ledger()
    rows = [outbox.row(m) for m in messages]
    for row in rows[:5]:
        assert (row.status, row.attempts) == (Status.ACCEPTED, 1)
        assert row.tracking_id == ledger[row.client_message_id].tracking_id
    assert [(r.status, r.attempts) for r in rows[5:]] == [(Status.PENDING, 0)] * 5
    gate = outbox.gate()
    assert gate.failures == 1
    assert gate.batch_limit is not None and gate.batch_limit <= 4  # learnt before the outage


class SlowApi:
    """A sender whose every request takes ``seconds`` of the test clock to be answered.

    A request whose deadline comes sooner still reaches the API (the sandbox receives it) but
    times out: the clock moves by its window and the outcome is unknown, as with a real client.
    """

    def __init__(self, inner: Sender, clock: Clock, seconds: float) -> None:
        self.inner, self.clock, self.seconds = inner, clock, seconds

    def send(self, batch: Sequence[Communication], *, deadline: float | None = None) -> SendResult:
        window = self.seconds if deadline is None else deadline - time.monotonic()
        result = self.inner.send(batch, deadline=deadline)
        self.clock.advance(min(window, self.seconds))
        return result if window >= self.seconds else TransportError("timed out")


def test_a_request_is_not_made_in_less_time_than_this_batchs_answers_took(
    outbox: Outbox,
) -> None:
    messages = outbox.enqueue_ordinary(4)
    with outbox.engine.begin() as connection:  # suspects, as after a timeout: each goes alone
        connection.execute(text("UPDATE outbox_messages SET suspicion = 1"))
    dispatcher = outbox.dispatcher(OUTBOX_LEASE_SECONDS=6, WIRAYA_TIMEOUT_SECONDS=2)
    dispatcher.sender = SlowApi(dispatcher.sender, outbox.clock, seconds=1.5)

    summary = dispatcher.dispatch_once()

    # Answers at +1.5 s, +3 s and +4.5 s; a fourth request would have 0.5 s before the lease's
    # record margin, less than each answer took: it would time out after reaching the API, and
    # its message be sent again. The rest goes back unspent.
    assert (summary.requests, summary.accepted, summary.retried, summary.released) == (3, 3, 0, 1)
    assert {m: e.times_received for m, e in outbox.sandbox.ledger().items()} == {
        m: 1 for m in messages[:3]
    }
    assert [outbox.row(m).attempts for m in messages[3:]] == [0]


@pytest.mark.parametrize(
    ("seconds", "timeout", "batch", "before"),
    [(1.5, 2, 8, 0), (0.6, 1, 64, 0), (1.5, 2, 8, 2)],
    ids=["answers-in-1.5s", "answers-in-0.6s", "answers-in-1.5s-two-older"],
)
def test_a_slow_400_still_isolates_its_message_batch_after_batch(
    outbox: Outbox, seconds: float, timeout: int, batch: int, before: int
) -> None:
    """A message draws a 400, answered slowly: no batch's lease holds the whole split, which
    would stop at the same place batch after batch. A split cut short leaves the half known to
    hold the bad message suspect; the next batch sends those alone, and it is found. (With two
    older messages the split's first half is answered and its second half is cut.)"""
    good = outbox.enqueue_ordinary(before)
    outbox.insert_raw("refused-by-api", REFUSED_BY_API, VALID_CONTENT)
    good += outbox.enqueue_ordinary(batch + 3)
    dispatcher = outbox.dispatcher(
        OUTBOX_LEASE_SECONDS=timeout + 4, WIRAYA_TIMEOUT_SECONDS=timeout, OUTBOX_BATCH_SIZE=batch
    )
    dispatcher.sender = SlowApi(dispatcher.sender, outbox.clock, seconds=seconds)

    for _ in range(30):
        dispatcher.dispatch_once()
        outbox.clock.advance(1)

    assert outbox.row("refused-by-api").status == Status.FAILED
    assert {outbox.row(m).status for m in good} == {Status.ACCEPTED}
    assert {e.times_received for e in outbox.sandbox.ledger().values()} == {1}


def test_a_slow_400_behind_older_messages_falling_due_is_found_soon(outbox: Outbox) -> None:
    """Older messages keep falling due (scheduled ones, retries), so each batch sorts two of them
    before the message that draws the 400: the first half is answered and the split is cut at
    its second half, which is then known to hold the bad message and goes back suspect."""
    older = outbox.enqueue_ordinary(40)
    outbox.insert_raw("refused-by-api", REFUSED_BY_API, VALID_CONTENT)
    with outbox.engine.begin() as connection:  # two older messages fall due every second
        for number, key in enumerate(older):
            connection.execute(
                text(
                    "UPDATE outbox_messages SET next_attempt_at = :due "
                    "WHERE client_message_id = :key"
                ),
                {"due": outbox.clock.now + timedelta(seconds=number / 2), "key": key},
            )
    # Answers in 2 s: the first request and the answered first half take 4 s of the lease's 5.5.
    dispatcher = outbox.dispatcher(
        OUTBOX_LEASE_SECONDS=6.5, WIRAYA_TIMEOUT_SECONDS=2.5, OUTBOX_BATCH_SIZE=4
    )
    dispatcher.sender = SlowApi(dispatcher.sender, outbox.clock, seconds=2.0)

    for _ in range(4):
        dispatcher.dispatch_once()

    assert outbox.row("refused-by-api").status == Status.FAILED
