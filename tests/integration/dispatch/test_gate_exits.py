"""Every brake of the gate has an exit that needs nobody (design.md 5a, invariant 6).

A refused key is tried again on its own slow cadence, and that try closes an open circuit; a
learnt batch limit follows the API down and creeps back up; a learnt rate climbs back to its
ceiling once 429s stop. `outbox resume` only makes these happen sooner.
"""

from __future__ import annotations

from datetime import timedelta

from models import Status
from sandbox.faults import Faults
from tests.integration.dispatch.harness import Outbox
from tests.integration.dispatch.test_gate import KEY_RETRY, key_view, open_the_circuit
from worker.dispatch.gate import read_gate, reset_gate


def test_a_probe_refused_while_the_circuit_is_open_is_retried_and_closes_it(
    outbox: Outbox,
) -> None:
    # One key. An outage opens the circuit; its probe meets a gateway's 403 page.
    messages = outbox.enqueue_ordinary(11)
    outbox.sandbox.set_faults(outage=True)
    open_the_circuit(outbox)
    outbox.sandbox.set_faults(outage=False, forbidden=True)
    outbox.clock.move_to(outbox.gate().next_probe_at)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=5)
    probe = dispatcher.dispatch_once()
    assert (probe.state, probe.requests) == ("alarm", 1)
    assert key_view(outbox, "sandbox").key_refused and outbox.gate().circuit_open(3)

    # The API is healthy again; nobody runs `outbox resume`.
    outbox.sandbox.set_faults(forbidden=False)
    outbox.clock.advance(KEY_RETRY.total_seconds() - 1)
    assert dispatcher.due_batches(outbox.clock.now) == 0  # the key's retry is not due yet
    assert dispatcher.dispatch_once().state == "paused"
    outbox.clock.advance(1)

    assert dispatcher.due_batches(outbox.clock.now) == 1  # beat queues the key's retry
    retry = dispatcher.dispatch_once()

    # The retry is the circuit's probe: one message, whose answer closes the circuit and
    # clears the key; the rest of its batch goes out at once.
    assert (retry.state, retry.accepted, retry.requests) == ("sent", 5, 2)
    assert not key_view(outbox, "sandbox").key_refused
    assert outbox.gate().failures == 0
    outbox.drain(dispatcher)
    assert {outbox.row(m).status for m in messages} == {Status.ACCEPTED}


def test_a_refused_key_retries_under_a_request_rate(outbox: Outbox) -> None:
    outbox.enqueue_ordinary(3)
    outbox.sandbox.set_faults(forbidden=True)
    dispatcher = outbox.dispatcher(OUTBOX_RATE_LIMIT=0.5)
    assert dispatcher.dispatch_once().state == "alarm"
    outbox.sandbox.set_faults(forbidden=False)
    outbox.clock.advance(KEY_RETRY.total_seconds())
    outbox.set_gate(next_send_at=outbox.clock.now + timedelta(seconds=1))  # a slot to wait for

    retry = dispatcher.dispatch_once()  # waits for its slot, then sends

    assert (retry.state, retry.accepted) == ("sent", 3)
    assert not key_view(outbox, "sandbox").key_refused


BIG = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "x" * 1_500}


def alarmed_keys(outbox: Outbox) -> int:
    with outbox.engine.connect() as connection:
        return read_gate(connection).refused_key_count


def test_a_key_retry_answered_for_its_message_alone_clears_the_key_and_its_alarm(
    outbox: Outbox,
) -> None:
    """Simulator seed 7092: the key's retry is the last message left, and the API answers it for
    that message alone (too large): the request went through under the key, so the key is
    cleared and its alarm ends, though nothing is left to send with it."""
    [message] = outbox.enqueue("46705999999", content=BIG)
    outbox.sandbox.set_faults(forbidden=True)
    dispatcher = outbox.dispatcher()
    assert dispatcher.dispatch_once().state == "alarm"
    outbox.sandbox.set_faults(forbidden=False, max_body_bytes=1_400)
    outbox.clock.advance(KEY_RETRY.total_seconds())

    retry = dispatcher.dispatch_once()

    assert (retry.requests, outbox.row(message).status) == (1, Status.FAILED)
    assert not key_view(outbox, "sandbox").key_refused
    assert alarmed_keys(outbox) == 0


def test_a_probe_answered_for_its_message_alone_closes_the_circuit(outbox: Outbox) -> None:
    """The open circuit's probe is the one message due, and the API answers it for that message
    alone (too large): the API answers, so the circuit closes."""
    [message] = outbox.enqueue("46705999999", content=BIG)
    outbox.sandbox.set_faults(max_body_bytes=1_400)
    outbox.set_gate(failures=3, reason="ServerError: HTTP 503", next_probe_at=outbox.clock.now)
    dispatcher = outbox.dispatcher()

    probe = dispatcher.dispatch_once()

    assert (probe.requests, outbox.row(message).status) == (1, Status.FAILED)
    assert not outbox.gate().circuit_open(3)


def test_the_batch_limit_follows_the_api_down_and_creeps_back(outbox: Outbox) -> None:
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=32)
    outbox.enqueue_ordinary(64)
    outbox.drain(dispatcher)
    assert outbox.gate().batch_proven == 32
    # Wiraya lowers its item limit: a batch of the size it once took is now too large.
    outbox.sandbox.set_faults(max_batch=8)
    outbox.enqueue_ordinary(96)
    outbox.clock.catch_up()
    before = outbox.sandbox.request_count

    first = dispatcher.dispatch_once()

    # [32] -> [16] too large -> [8] [8] taken, [16] too large -> [8] [8] taken
    assert (first.accepted, outbox.sandbox.request_count - before) == (32, 7)
    gate = outbox.gate()
    assert (gate.batch_limit, gate.batch_proven) == (8, 8)
    later = [dispatcher.dispatch_once() for _ in range(8)]
    assert [(s.claimed, s.requests) for s in later] == [(8, 1)] * 8

    # The API takes 32 again: the limit creeps back without anyone's help.
    outbox.sandbox.set_faults(max_batch=None)
    outbox.enqueue_ordinary(6_000)
    outbox.clock.catch_up()
    claims = [dispatcher.dispatch_once().claimed for _ in range(150)]
    assert claims[-1] == 32 and outbox.gate().batch_limit is None


def test_a_message_too_large_on_its_own_leaves_the_batch_limit_alone(outbox: Outbox) -> None:
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=8)
    outbox.enqueue_ordinary(8)
    outbox.drain(dispatcher)
    big = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "x" * 1_500}
    with_big = outbox.enqueue_ordinary(7) + outbox.enqueue("46705999999", content=big)
    outbox.sandbox.set_faults(max_body_bytes=1_400)  # eight ordinary messages fit, not the big
    outbox.clock.catch_up()

    outbox.drain(dispatcher)

    assert outbox.row(with_big[-1]).status == Status.FAILED
    assert {outbox.row(m).status for m in with_big[:-1]} == {Status.ACCEPTED}
    gate = outbox.gate()
    assert gate.batch_proven == 8 and gate.batch_limit in (None, 8)


def test_resume_forgets_the_learnt_batch_sizes(outbox: Outbox) -> None:
    outbox.set_gate(batch_limit=4, batch_proven=16)
    with outbox.engine.connect() as connection:
        reset_gate(connection, now=outbox.clock.now)
        connection.commit()
    gate = outbox.gate()
    assert (gate.batch_limit, gate.batch_proven) == (None, None)


def test_the_learnt_rate_climbs_back_to_its_ceiling_once_429s_stop(outbox: Outbox) -> None:
    outbox.sandbox.set_faults(Faults(rate_limit=0.001, retry_after=timedelta(seconds=1)))
    outbox.enqueue_ordinary(200)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=1)
    assert dispatcher.dispatch_once().accepted == 1
    assert dispatcher.dispatch_once().state == "alarm"  # a 429: the learnt rate is 1/s
    outbox.clock.advance(1)
    assert dispatcher.dispatch_once().state == "alarm"  # another: 0.7/s, ceiling 1/s
    gate = outbox.gate()
    assert gate.rate is not None and gate.rate_ceiling == 1.0 and gate.rate < 1.0
    outbox.sandbox.set_faults(rate_limit=None)

    for _ in range(80):
        outbox.clock.advance(2)
        dispatcher.dispatch_once()

    gate = outbox.gate()
    assert gate.rate is not None and gate.rate >= 1.0  # back at its ceiling, and probing past
