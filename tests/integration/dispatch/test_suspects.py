"""A message that draws failures on its own ends failed, wherever it stands (design.md 5a, 7).

Each route once stalled the outbox: a poison message at the head of a fresh start (its failure
counted against the API, its batch released in place, the circuit's probe always that message),
two poison messages in one batch after good answers (both halves of the bisection fail, which
read as an outage), a message on which the API hangs while traffic keeps arriving (bisection
levels cost a timeout each, the lease ended first, the rest released with no mark). And an
outage, where every message becomes a suspect, must still open the circuit, probe one message
per interval and spend no attempt.

The sandbox answers 500 to any request holding …0000006 and never answers one holding
…0000008; ``Hanging`` moves the test clock by a request's window when it times out.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import update

from models import OutboxMessage, Status
from sandbox.recipients import POISON_SUFFIX
from tests.integration.dispatch.harness import HANG, Hanging, Outbox, recipient

POISON = "4670" + POISON_SUFFIX
ATTEMPTS = 3


def _isolated(row: OutboxMessage, kind: str) -> None:
    assert (row.status, row.attempts) == (Status.FAILED, ATTEMPTS), row
    assert row.last_error is not None
    assert row.last_error.startswith(f"gave up after {ATTEMPTS} attempts: isolated: "), row
    assert kind in row.last_error


def _accepted_once(outbox: Outbox, client_message_ids: list[str]) -> None:
    rows = outbox.rows()
    ledger = outbox.sandbox.ledger()
    for client_message_id in client_message_ids:
        row = rows[client_message_id]
        assert (row.status, row.attempts) == (Status.ACCEPTED, 1), row  # no attempt spent
        assert row.tracking_id == ledger[client_message_id].tracking_id


def test_a_poison_message_at_the_head_of_a_fresh_start_ends_failed(outbox: Outbox) -> None:
    [poison] = outbox.enqueue(POISON)
    mates = outbox.enqueue_ordinary(7)
    later = outbox.enqueue_ordinary(8)
    dispatcher = outbox.dispatcher(
        OUTBOX_BATCH_SIZE=8, OUTBOX_MAX_ATTEMPTS=ATTEMPTS, OUTBOX_CIRCUIT_FAILURES=3
    )

    outbox.settle(dispatcher, rounds=60)

    _isolated(outbox.row(poison), "ServerError: HTTP 500")
    _accepted_once(outbox, mates + later)
    assert outbox.sandbox.entry(poison) is None
    gate = outbox.gate()
    assert (gate.failures, gate.paused_until) == (0, None)


@pytest.mark.parametrize("where", [(0, 15), (3, 12), (6, 9)], ids=str)
def test_two_poison_messages_in_one_batch_after_good_answers_end_failed(
    outbox: Outbox, where: tuple[int, int]
) -> None:
    outbox.enqueue_ordinary(4)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=16, OUTBOX_MAX_ATTEMPTS=ATTEMPTS)
    assert dispatcher.dispatch_once().accepted == 4  # the API answers
    first, second = where
    mates = outbox.enqueue_ordinary(first)
    [one] = outbox.enqueue(POISON)
    mates += outbox.enqueue_ordinary(second - first - 1)
    [other] = outbox.enqueue(POISON)
    mates += outbox.enqueue_ordinary(15 - second)

    outbox.settle(dispatcher, rounds=60)

    _isolated(outbox.row(one), "ServerError: HTTP 500")
    _isolated(outbox.row(other), "ServerError: HTTP 500")
    _accepted_once(outbox, mates)


def test_a_hanging_message_ends_failed_while_traffic_keeps_arriving(outbox: Outbox) -> None:
    # A lease of five timeouts: the bisection of a batch of 16 cannot reach the message alone
    # within one lease (each level costs a timeout), as with the defaults (30 s, 120 s).
    dispatcher = outbox.dispatcher(
        OUTBOX_BATCH_SIZE=16,
        OUTBOX_MAX_ATTEMPTS=ATTEMPTS,
        WIRAYA_TIMEOUT_SECONDS=1,
        OUTBOX_LEASE_SECONDS=5,
    )
    dispatcher.sender = Hanging(dispatcher.sender, outbox.clock)
    outbox.enqueue_ordinary(4)
    assert dispatcher.dispatch_once().accepted == 4  # the API answers
    mates = outbox.enqueue_ordinary(7)
    [hanging] = outbox.enqueue(HANG)
    mates += outbox.enqueue_ordinary(8)
    arriving = _traffic(outbox, mates, per_round=4)

    for _ in range(60):  # four messages a second keep arriving all along
        arriving()
        dispatcher.dispatch_once()
        outbox.clock.advance(1)

    _isolated(outbox.row(hanging), "TransportError")
    outbox.settle(dispatcher, rounds=30)
    _accepted_once(outbox, mates)


def test_clean_batch_mates_are_recorded_before_a_suspect_is_sent_alone(outbox: Outbox) -> None:
    dispatcher = outbox.dispatcher(WIRAYA_TIMEOUT_SECONDS=1, OUTBOX_LEASE_SECONDS=5)
    dispatcher.sender = Hanging(dispatcher.sender, outbox.clock)
    outbox.enqueue_ordinary(2)
    assert dispatcher.dispatch_once().accepted == 2  # the API answers
    [hanging] = outbox.enqueue(HANG)
    mates = outbox.enqueue_ordinary(5)
    with outbox.engine.begin() as connection:  # an earlier request with it failed unanswered
        connection.execute(
            update(OutboxMessage)
            .where(OutboxMessage.client_message_id == hanging)
            .values(suspicion=1)
        )
    claimed_at = outbox.clock.now

    summary = dispatcher.dispatch_once()

    # The five go out first, in one request, and are recorded before the suspect hangs alone.
    assert (summary.requests, summary.accepted, summary.retried) == (2, 5, 1)
    assert {outbox.row(m).accepted_at for m in mates} == {claimed_at}
    row = outbox.row(hanging)
    assert (row.status, row.attempts, row.suspicion) == (Status.PENDING, 1, 2)
    assert row.last_error is not None and row.last_error.startswith("isolated: ")
    assert "TransportError" in row.last_error
    assert outbox.clock.now > claimed_at  # the hang took its window
    assert outbox.gate().failures == 0


def test_an_outage_opens_the_circuit_probes_on_its_cadence_and_spends_no_attempt(
    outbox: Outbox,
) -> None:
    outbox.enqueue_ordinary(3)
    dispatcher = outbox.dispatcher(
        OUTBOX_BATCH_SIZE=8, OUTBOX_CIRCUIT_FAILURES=3, OUTBOX_PROBE_INTERVAL_SECONDS=10
    )
    assert dispatcher.dispatch_once().accepted == 3
    messages = outbox.enqueue_ordinary(20)
    outbox.sandbox.set_faults(outage=True)
    started = outbox.clock.now

    requests: list[int] = []
    while outbox.clock.now < started + _seconds(300):  # five minutes of outage
        summary = dispatcher.dispatch_once()
        requests.append(summary.requests)
        assert summary.requests <= 3  # a batch, or its two halves at the outage's start
        if summary.state in ("idle", "paused"):
            outbox.clock.move_to(outbox.next_event())

    gate = outbox.gate()
    assert gate.failures >= 3  # the circuit is open
    # Until it opened, a few batches; then one probe per interval, never more.
    assert sum(requests) <= 3 + 2 + 300 // 10 + 1
    assert {(outbox.row(m).status, outbox.row(m).attempts) for m in messages} == {
        (Status.PENDING, 0)
    }

    outbox.sandbox.set_faults(outage=False)
    outbox.settle(dispatcher, rounds=60)
    _accepted_once(outbox, messages)


def _traffic(outbox: Outbox, sent: list[str], *, per_round: int) -> Callable[[], None]:
    """Each call enqueues ``per_round`` ordinary messages and adds them to ``sent``."""
    numbers = iter(range(1_000, 1_000_000, 1))

    def arrive() -> None:
        sent.extend(outbox.enqueue(*(recipient(next(numbers)) for _ in range(per_round))))

    return arrive


def _seconds(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)
