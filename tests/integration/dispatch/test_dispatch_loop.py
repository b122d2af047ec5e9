"""One dispatch: batches back to back, idle, budget, alarms, pauses, statements per batch.

Every test drives ``Dispatcher.dispatch_once`` (or ``dispatch``) in-process (no Celery) with an
injected clock; waiting out a backoff, a lease or a Retry-After is a move of the clock. Rows are
compared with the sandbox's ledger: what Wiraya would hold.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, text

from models import Status
from tests.integration.dispatch.harness import (
    ALPHA,
    OMITTED_ONCE,
    PERMANENT,
    TRANSIENT_TWICE,
    Outbox,
    WhileSending,
    outage_from,
    outbox_statements,
)
from worker.dispatch.summary import BatchSummary


def test_due_batches_counts_batches_of_the_permitted_size(outbox: Outbox) -> None:
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=10, OUTBOX_MAX_PARALLEL_DISPATCHES=4)
    now = outbox.clock.now
    assert dispatcher.due_batches(now) == 0
    outbox.enqueue_ordinary(25)
    assert dispatcher.due_batches(now) == 3
    outbox.enqueue_ordinary(30)
    assert dispatcher.due_batches(now) == 4  # capped at the parallel limit

    outbox.set_gate(batch_limit=5)  # the API said batches above 5 are too large
    assert dispatcher.due_batches(now) == 4
    with outbox.engine.begin() as connection:
        connection.execute(text("DELETE FROM outbox_messages WHERE id > 15"))
    assert dispatcher.due_batches(now) == 3  # 15 rows in batches of 5, not 2 of 10

    outbox.set_gate(paused_until=now + timedelta(seconds=9), reason="outage")
    assert dispatcher.due_batches(now) == 0  # paused: wake nobody
    assert dispatcher.due_batches(now + timedelta(seconds=9)) == 3


def test_due_batches_counts_no_further_than_the_room_left_for_waiting_dispatches(
    outbox: Outbox,
) -> None:
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=10, OUTBOX_MAX_PARALLEL_DISPATCHES=4)
    now = outbox.clock.now
    outbox.enqueue_ordinary(55)
    assert dispatcher.due_batches(now, room=2) == 2
    with outbox_statements(outbox.engine) as statements:
        assert dispatcher.due_batches(now, room=0) == 0  # as many wait as may: nothing to count
    assert statements == []


def test_a_dispatch_sends_full_batches_back_to_back_and_wakes_another_once(
    outbox: Outbox,
) -> None:
    messages = outbox.enqueue_ordinary(25)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=10)
    wakes: list[str] = []
    dispatcher.on_full_batch = lambda: wakes.append("wake")

    summary = dispatcher.dispatch()

    # 10 + 10 + 5: the short third batch shows the backlog is drained, so the dispatch ends.
    assert (summary.state, summary.batches, summary.claimed) == ("sent", 3, 25)
    assert (summary.accepted, summary.requests, summary.alarm) == (25, 3, None)
    assert len(summary.request_seconds) == 3
    assert wakes == ["wake"]  # only the first full batch asks for help
    assert {m: r.status for m, r in outbox.rows().items()} == dict.fromkeys(
        messages, Status.ACCEPTED
    )
    assert summary.as_dict()["batches"] == 3


def test_a_dispatch_with_nothing_due_is_idle(outbox: Outbox) -> None:
    summary = outbox.dispatcher().dispatch()
    assert (summary.state, summary.batches, summary.claimed, summary.requests) == (
        "idle",
        0,
        0,
        0,
    )


def test_a_dispatch_hands_over_when_its_budget_is_spent(outbox: Outbox) -> None:
    outbox.enqueue_ordinary(25)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=10)

    summary = dispatcher.dispatch(budget=timedelta(0))

    assert (summary.batches, summary.claimed) == (1, 10)
    assert dispatcher.dispatch().claimed == 15  # the rest waited for the next dispatch


def test_a_dispatch_stops_at_an_alarm_and_keeps_what_it_sent(outbox: Outbox) -> None:
    messages = outbox.enqueue_ordinary(30)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=10)
    dispatcher.sender = WhileSending(dispatcher.sender, outage_from(outbox.sandbox, 2))

    summary = dispatcher.dispatch()

    # The second batch draws a 503 just after the first was answered: a 503 says the API is
    # unavailable, so it counts against the API at once, no halves tried: 1 + 1 requests.
    assert (summary.state, summary.batches, summary.requests) == ("alarm", 2, 2)
    assert (summary.accepted, summary.released) == (10, 10)
    assert summary.alarm is not None and summary.alarm.startswith("ServerError")
    statuses = [outbox.row(m).status for m in messages]
    assert statuses == [Status.ACCEPTED] * 10 + [Status.PENDING] * 20  # the third never claimed


def test_a_dispatch_ends_quietly_when_another_worker_paused_sending(outbox: Outbox) -> None:
    outbox.enqueue_ordinary(30)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=10)
    now = outbox.clock.now

    def another_worker_meets_an_outage() -> BatchSummary:
        outbox.set_gate(paused_until=now + timedelta(seconds=30), reason="outage")
        return BatchSummary()

    dispatcher.sender = WhileSending(dispatcher.sender, another_worker_meets_an_outage)

    summary = dispatcher.dispatch()

    # The batch in flight is recorded; the next finds the gate closed and the dispatch ends
    # without an alarm of its own (the worker that met the outage raised it).
    assert (summary.state, summary.batches, summary.accepted, summary.alarm) == (
        "sent",
        1,
        10,
        None,
    )


@pytest.mark.parametrize("size", [10, 500])
def test_a_batch_takes_at_most_three_statements_whatever_its_size(
    outbox: Outbox, size: int
) -> None:
    # Every kind of outcome in one batch: all of them are written by the same statement.
    outbox.enqueue(PERMANENT, TRANSIENT_TWICE, OMITTED_ONCE)
    outbox.insert_raw("invalid", "hello", ALPHA)
    outbox.enqueue_ordinary(size - 4)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=size)

    with outbox_statements(outbox.engine) as statements:
        summary = dispatcher.dispatch_once()

    assert summary.claimed == size
    assert (summary.accepted, summary.failed, summary.retried) == (size - 4, 2, 2)
    assert len(statements) <= 3, statements


def test_a_batch_whose_answer_changes_no_brake_checks_out_two_connections(outbox: Outbox) -> None:
    # One for the gate read, the claim and the sending policy's look-ups (the opt-out list),
    # one for the record; a gate note or slot booking that writes nothing takes none.
    outbox.enqueue_ordinary(20)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=10)
    dispatcher.dispatch_once()  # the first answer is noted in the gate
    checkouts: list[object] = []

    def count(*_: object) -> None:
        checkouts.append(None)

    event.listen(outbox.engine.pool, "checkout", count)
    try:
        summary = dispatcher.dispatch_once()
    finally:
        event.remove(outbox.engine.pool, "checkout", count)

    assert summary.accepted == 10
    assert len(checkouts) == 2
