"""The sending gate as the dispatcher meets it: refused keys, 429s, outages, the circuit, slots.

Every test drives ``Dispatcher.dispatch_once`` (or ``dispatch``) in-process (no Celery) with an
injected clock; waiting out a backoff, a lease or a Retry-After is a move of the clock. Rows are
compared with the sandbox's ledger: what Wiraya would hold. The gate's own invariants under
interleavings are in test_gate_interleavings.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from models import Status
from sandbox.faults import Faults
from sandbox.testing import running_sandbox
from tests.integration.dispatch.harness import ALPHA, Outbox, WhileSending, recipient
from tests.integration.dispatch.test_splits import SlowApi
from worker.api_keys import key_fingerprint
from worker.dispatch import gate as gates
from worker.dispatch.gate import transitions
from worker.dispatch.retry import INITIAL_RATE
from worker.dispatch.summary import BatchSummary
from worker.wiraya.results import Communication, SendResult

PROBE_INTERVAL = timedelta(seconds=10)  # the default OUTBOX_PROBE_INTERVAL_SECONDS
KEY_RETRY = timedelta(seconds=300)  # the default OUTBOX_REFUSED_KEY_RETRY_SECONDS


def key_view(outbox: Outbox, api_key: str) -> gates.GateView:
    with outbox.engine.connect() as connection:
        return gates.read(connection, key_fingerprint(api_key, outbox.settings().fingerprint_salt))


def test_a_refused_key_stops_that_key_only_and_another_key_sends_at_once(engine: Engine) -> None:
    with running_sandbox(api_key="right-key") as sandbox:
        outbox = Outbox(engine, sandbox)
        try:
            messages = outbox.enqueue_ordinary(3)
            wrong = outbox.dispatcher(WIRAYA_API_KEY="wrong-key")

            summary = wrong.dispatch_once()

            assert (summary.state, summary.released, summary.failed) == ("alarm", 3, 0)
            assert summary.alarm is not None and summary.alarm.startswith("Unauthorized")
            for row in outbox.rows().values():
                assert (row.status, row.attempts, row.tracking_id) == (Status.PENDING, 0, None)
            refused = key_view(outbox, "wrong-key")
            assert refused.key_refused and refused.refused_key_count == 1
            # A key problem is not the API's: no pause, no failure counted for anyone.
            assert (refused.paused_until, refused.failures) == (None, 0)
            assert sandbox.status_count(401) == 1 and sandbox.ledger() == {}

            outbox.clock.advance(5)  # before the refused key's next probe
            assert wrong.dispatch_once().state == "paused"
            assert wrong.due_batches(outbox.clock.now) == 0
            assert sandbox.request_count == 1
            # The operator's new key is not held back by the old key's refusal.
            right = outbox.dispatcher(WIRAYA_API_KEY="right-key")
            assert right.due_batches(outbox.clock.now) == 1
            summaries = outbox.drain(right)

            assert sum(s.accepted for s in summaries) == 3
            ledger = sandbox.ledger()
            for client_message_id in messages:
                row = outbox.row(client_message_id)
                assert (row.status, row.attempts) == (Status.ACCEPTED, 1)
                assert row.tracking_id == ledger[client_message_id].tracking_id
            # The old key stays refused until a request with it is answered (or a resume).
            assert key_view(outbox, "wrong-key").key_refused
            assert not key_view(outbox, "right-key").key_refused
        finally:
            outbox.close()


def test_a_refused_key_tries_one_message_per_retry_interval(outbox: Outbox) -> None:
    outbox.sandbox.set_faults(forbidden=True)
    outbox.enqueue_ordinary(4)
    dispatcher = outbox.dispatcher()

    summary = dispatcher.dispatch_once()

    assert (summary.state, summary.released, summary.failed) == ("alarm", 4, 0)
    assert summary.alarm is not None and summary.alarm.startswith("Unauthorized: HTTP 403")
    assert {(r.status, r.attempts) for r in outbox.rows().values()} == {(Status.PENDING, 0)}
    refused = key_view(outbox, "sandbox")
    assert refused.key_next_probe_at == outbox.clock.now + KEY_RETRY
    outbox.clock.advance(KEY_RETRY.total_seconds() - 0.1)
    assert dispatcher.dispatch_once().state == "paused"
    assert outbox.sandbox.request_count == 1

    # On its own slow cadence the refused key tries one message, not a batch.
    outbox.clock.advance(0.1)
    probe = dispatcher.dispatch_once()

    assert (probe.state, probe.requests, probe.released) == ("alarm", 1, 4)
    assert outbox.sandbox.request_count == 2
    assert dispatcher.dispatch_once().state == "paused"

    # Once the caller is allowed again, the next probe's answer reopens sending at once.
    outbox.sandbox.set_faults(forbidden=False)
    outbox.clock.advance(KEY_RETRY.total_seconds())
    cleared = dispatcher.dispatch_once()

    assert (cleared.state, cleared.accepted, cleared.requests) == ("sent", 4, 2)
    assert not key_view(outbox, "sandbox").key_refused


def test_a_429_pauses_everyone_for_retry_after_then_sends_at_a_learnt_rate(
    outbox: Outbox,
) -> None:
    # One request's worth of tokens, then 429 with Retry-After: 30.
    outbox.sandbox.set_faults(rate_limit=0.001, retry_after=timedelta(seconds=30))
    outbox.enqueue_ordinary(15)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=5)
    assert dispatcher.dispatch_once().accepted == 5
    limited_at = outbox.clock.now

    summary = dispatcher.dispatch_once()

    assert (summary.state, summary.released, summary.failed) == ("alarm", 5, 0)
    assert outbox.sandbox.status_count(429) == 1
    gate = outbox.gate()
    assert gate.paused_until is not None
    assert gate.paused_until >= limited_at + timedelta(seconds=30)  # Retry-After is a floor
    assert gate.failures == 0  # a 429 is not a backend failure: it does not open the circuit
    assert gate.rate == INITIAL_RATE  # from now on every worker shares a rate
    released = [r for r in outbox.rows().values() if r.status == Status.PENDING]
    assert len(released) == 10 and {r.attempts for r in released} == {0}

    outbox.clock.move_to(limited_at + timedelta(seconds=29.9))
    paused = dispatcher.dispatch_once()
    assert (paused.state, paused.claimed) == ("paused", 0)
    assert outbox.sandbox.request_count == 2

    # Still limited at the end of the pause: the rate comes down from the one that drew it.
    outbox.clock.move_to(gate.paused_until)
    assert dispatcher.dispatch_once().state == "alarm"
    gate = outbox.gate()
    assert (gate.rate, gate.rate_ceiling) == (pytest.approx(0.7), INITIAL_RATE)

    outbox.sandbox.set_faults(rate_limit=None)
    assert gate.paused_until is not None
    outbox.clock.move_to(gate.paused_until)
    summaries = [dispatcher.dispatch_once(), dispatcher.dispatch_once()]

    assert sum(s.accepted for s in summaries) == 10
    assert {r.status for r in outbox.rows().values()} == {Status.ACCEPTED}
    assert {r.attempts for r in outbox.rows().values()} == {1}
    # The two batches, claimed at one instant, were sent a slot apart: 1 / 0.7 s.
    assert [s.claimed for s in summaries] == [5, 5]
    assert outbox.sleeps == [pytest.approx(1 / 0.7)]
    assert outbox.gate().rate > 0.7  # answered: the rate climbs back


REQUEST_FAILURES = {
    # name: (faults, client timeout, the failure's type, whether the sandbox did the work)
    "500": (Faults(p500=1.0), 5, "ServerError: HTTP 500", False),
    "503": (Faults(p503=1.0), 5, "ServerError: HTTP 503", False),
    "HTML 502": (Faults(p502_html=1.0), 5, "ServerError: HTTP 502: HTML page", False),
    "outage": (Faults(outage=True), 5, "ServerError: HTTP 503", False),
    "bad JSON": (Faults(p_bad_json=1.0), 5, "ServerError: HTTP 200 with a body", True),
    "dropped": (Faults(p_drop=1.0), 5, "TransportError", True),
    "timeout": (Faults(slow_after_work=timedelta(seconds=5)), 0.75, "TransportError: ", True),
}


@pytest.mark.parametrize(
    ("faults", "timeout", "reason", "work_done"),
    REQUEST_FAILURES.values(),
    ids=list(REQUEST_FAILURES),
)
def test_a_request_failure_releases_rows_without_spending_attempts(
    outbox: Outbox, faults: Faults, timeout: float, reason: str, work_done: bool
) -> None:
    messages = outbox.enqueue_ordinary(4)
    outbox.sandbox.set_faults(faults)
    dispatcher = outbox.dispatcher(WIRAYA_TIMEOUT_SECONDS=timeout)

    summary = dispatcher.dispatch_once()

    assert (summary.state, summary.released, summary.accepted, summary.failed) == (
        "alarm",
        4,
        0,
        0,
    )
    gate = outbox.gate()
    assert gate.failures == 1
    assert gate.paused_until is not None and gate.paused_until > outbox.clock.now
    assert gate.reason is not None and gate.reason.startswith(reason)
    for row in outbox.rows().values():
        assert (row.status, row.attempts, row.tracking_id) == (Status.PENDING, 0, None)
        assert row.last_error == gate.reason
        assert row.next_attempt_at <= outbox.clock.now  # keeps its place; the gate holds it
    ledger = outbox.sandbox.ledger()
    assert set(ledger) == (set(messages) if work_done else set())
    assert dispatcher.dispatch_once().state == "paused"
    assert dispatcher.due_batches(outbox.clock.now) == 0
    assert outbox.sandbox.request_count == 1

    outbox.sandbox.set_faults(Faults())
    outbox.clock.move_to(gate.paused_until)
    assert dispatcher.dispatch_once().accepted == 4

    resent = outbox.sandbox.ledger()
    for client_message_id in messages:
        row, entry = outbox.row(client_message_id), resent[client_message_id]
        assert (row.status, row.attempts) == (Status.ACCEPTED, 1)
        assert row.tracking_id == entry.tracking_id
        # A resend only when the outcome was unknown, and then under the same id:
        # the sandbox kept its first tracking id.
        assert entry.times_received == (2 if work_done else 1)
        if work_done:
            assert entry.tracking_id == ledger[client_message_id].tracking_id
    assert outbox.gate().failures == 0


def open_the_circuit(outbox: Outbox, *dispatchers: object) -> None:
    """Three counted failures in a row (OUTBOX_CIRCUIT_FAILURES in the harness)."""
    one = outbox.dispatcher(OUTBOX_BATCH_SIZE=5)
    for failures in (1, 2, 3):
        summary = one.dispatch_once()
        assert (summary.state, summary.claimed, summary.requests) == ("alarm", 5, 1)
        gate = outbox.gate()
        assert gate.failures == failures and gate.paused_until is not None
        if failures < 3:
            outbox.clock.move_to(gate.paused_until)


def test_the_open_circuit_sends_one_probe_per_probe_interval(outbox: Outbox) -> None:
    outbox.enqueue_ordinary(11)
    outbox.sandbox.set_faults(outage=True)
    one = outbox.dispatcher(OUTBOX_BATCH_SIZE=5)
    other = outbox.dispatcher(OUTBOX_BATCH_SIZE=5)
    clock = outbox.clock
    open_the_circuit(outbox)
    assert outbox.sandbox.request_count == 3
    gate = outbox.gate()
    assert gate.circuit_open(3) and gate.next_probe_at == clock.now + PROBE_INTERVAL

    # While a probe is in flight, the other worker must not send a probe of its own.
    probing = WhileSending(one.sender, other.dispatch_once)
    one.sender = probing
    for failures in (4, 5, 6):
        for fraction in (0.1, 0.5, 0.99):  # nobody sends before the probe's time
            clock.move_to(gate.next_probe_at - PROBE_INTERVAL * (1 - fraction))
            assert one.dispatch_once().state == "paused"
            assert other.dispatch_once().state == "paused"
        clock.move_to(gate.next_probe_at)
        sent_before = outbox.sandbox.request_count
        probe = one.dispatch_once()
        assert (probe.state, probe.requests) == ("alarm", 1)  # one message, not a batch
        assert probing.seen[-1].state == "paused"
        assert outbox.sandbox.request_count == sent_before + 1
        gate = outbox.gate()
        assert gate.failures == failures and gate.next_probe_at == clock.now + PROBE_INTERVAL

    one.sender = probing.inner
    outbox.sandbox.set_faults(outage=False)
    clock.move_to(gate.next_probe_at)
    probe = one.dispatch_once()
    # The probe's answer closes the circuit: the rest of its batch goes out at once, in one
    # request (the earlier probes drew 503s, the API's doing: their messages are not suspects).
    assert (probe.state, probe.claimed, probe.accepted, probe.requests) == ("sent", 5, 5, 2)
    gate = outbox.gate()
    assert (gate.failures, gate.paused_until, gate.reason, gate.probe_until) == (
        0,
        None,
        None,
        None,
    )
    assert other.dispatch_once().claimed == 5  # full batches again, at once
    assert one.dispatch_once().claimed == 1
    rows = outbox.rows().values()
    assert {(r.status, r.attempts) for r in rows} == {(Status.ACCEPTED, 1)}
    assert outbox.sandbox.status_count(503) == 6


def test_a_probe_never_stalls_behind_rows_that_cannot_be_sent(outbox: Outbox) -> None:
    outbox.enqueue_ordinary(5)
    outbox.sandbox.set_faults(outage=True)
    open_the_circuit(outbox)  # the five are released, due as before
    # At the head of the queue: rows that can never be sent, one whole batch of them.
    for number in range(6):
        outbox.insert_raw(f"invalid-{number}", "hello", ALPHA)
    with outbox.engine.begin() as connection:  # due before everything else
        connection.execute(
            text(
                "UPDATE outbox_messages SET next_attempt_at = :early "
                "WHERE client_message_id LIKE 'invalid-%'"
            ),
            {"early": outbox.clock.now - timedelta(hours=1)},
        )
    outbox.sandbox.set_faults(outage=False)
    outbox.clock.move_to(outbox.gate().next_probe_at)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=5)

    probe = dispatcher.dispatch_once()

    # The unsendable rows fail on the way (two claims of them), without being the probe; the
    # probe is a real message, and its answer reopens sending for everyone.
    assert probe.failed == 6
    assert probe.accepted >= 1 and probe.requests >= 1
    assert outbox.gate().failures == 0
    assert {r.status for r in outbox.rows().values() if r.client_message_id.startswith("m")} <= {
        Status.ACCEPTED,
        Status.PENDING,
    }
    outbox.drain(dispatcher)
    assert {r.status for r in outbox.rows().values()} == {Status.ACCEPTED, Status.FAILED}


def test_a_slot_too_far_to_wait_for_is_neither_booked_nor_claimed(outbox: Outbox) -> None:
    outbox.enqueue_ordinary(3)
    cursor = outbox.clock.now + timedelta(seconds=9)
    outbox.set_gate(rate=0.1, next_send_at=cursor)  # one request every 10 s, next in 9 s
    dispatcher = outbox.dispatcher()

    summary = dispatcher.dispatch_once()

    assert (summary.state, summary.claimed, summary.requests) == ("paused", 0, 0)
    assert outbox.gate().next_send_at == cursor  # no slot taken for nothing
    assert {(r.status, r.attempts) for r in outbox.rows().values()} == {(Status.PENDING, 0)}
    assert dispatcher.due_batches(outbox.clock.now) == 0

    outbox.clock.move_to(cursor - timedelta(seconds=1))  # now worth waiting for
    assert dispatcher.dispatch_once().accepted == 3
    assert outbox.sleeps == [pytest.approx(1.0)]
    assert outbox.gate().next_send_at == cursor + timedelta(seconds=10)


def test_a_success_never_erases_a_pause_another_worker_set_meanwhile(outbox: Outbox) -> None:
    outbox.enqueue_ordinary(6)
    now = outbox.clock.now
    # One failure noted a while ago: the gate is disturbed, but sending is allowed.
    outbox.set_gate(failures=1, reason="ServerError: HTTP 503", last_failure_at=now)
    outbox.clock.advance(30)
    until = outbox.clock.now + timedelta(seconds=30)

    def another_worker_gets_a_429() -> BatchSummary:
        with outbox.engine.connect() as connection:
            transitions.note_rate_limited(
                connection, now=outbox.clock.now, reason="RateLimited: HTTP 429", pause_until=until
            )
            connection.commit()
        return BatchSummary()

    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=3)
    dispatcher.sender = WhileSending(dispatcher.sender, another_worker_gets_a_429)

    summary = dispatcher.dispatch_once()

    assert summary.accepted == 3  # its own batch is recorded...
    gate = outbox.gate()
    assert gate.paused_until == until  # ...but the pause set during its request holds
    assert dispatcher.dispatch_once().state == "paused"


def test_a_pause_set_while_waiting_for_a_slot_is_honoured(outbox: Outbox) -> None:
    outbox.enqueue_ordinary(3)
    outbox.set_gate(rate=1.0, next_send_at=outbox.clock.now + timedelta(seconds=1))
    dispatcher = outbox.dispatcher()

    dispatcher.sleep = another_worker_pauses_everyone(outbox, seconds=30)

    summary = dispatcher.dispatch_once()

    assert (summary.state, summary.requests, summary.released) == ("paused", 0, 3)
    assert outbox.sandbox.request_count == 0
    assert {(r.status, r.attempts) for r in outbox.rows().values()} == {(Status.PENDING, 0)}


def test_another_keys_refusal_leaves_every_other_brake_on(outbox: Outbox) -> None:
    outbox.enqueue(recipient(1), recipient(2))
    now = outbox.clock.now
    with outbox.engine.connect() as connection:
        gates.read_gate(connection)
        transitions.refuse_key_unless_cleared_since(
            connection,
            fingerprint=key_fingerprint("old-key", outbox.settings().fingerprint_salt),
            status=401,
            reason="Unauthorized",
            started=now,
            now=now,
            probe_at=now + PROBE_INTERVAL,
        )
        connection.commit()
    dispatcher = outbox.dispatcher(WIRAYA_API_KEY="new-key")  # the operator's fixed key

    outbox.set_gate(paused_until=now + timedelta(seconds=5), reason="outage")
    assert dispatcher.dispatch_once().state == "paused"  # the pause still holds it
    outbox.set_gate(
        paused_until=None, failures=3, next_probe_at=now + timedelta(seconds=8), reason="outage"
    )
    assert dispatcher.dispatch_once().state == "paused"  # the open circuit too
    outbox.sandbox.set_faults(outage=True)
    outbox.clock.advance(8)
    probe = dispatcher.dispatch_once()
    assert (probe.state, probe.requests) == ("alarm", 1)  # one probe, not a batch
    assert dispatcher.dispatch_once().state == "paused"
    assert outbox.sandbox.request_count == 1


def test_a_probes_request_ends_by_its_lease_after_a_slot_wait(outbox: Outbox) -> None:
    """A probe may wait up to 2 s for its request slot, longer than its lease's margin over the
    timeout: its request still ends when its lease does, so no other probe goes out beside it."""
    outbox.enqueue_ordinary(3)
    now = outbox.clock.now
    outbox.set_gate(failures=3, reason="ServerError: HTTP 503", next_probe_at=now)
    outbox.set_gate(rate=0.5, next_send_at=now + timedelta(seconds=1.9))  # a slot in 1.9 s
    dispatcher = outbox.dispatcher(WIRAYA_TIMEOUT_SECONDS=5)
    dispatcher.sleep = outbox.clock.advance  # the wait takes its time
    ends: list[tuple[datetime, datetime | None]] = []  # each request's deadline, the lease's

    def note_the_deadline() -> BatchSummary:
        window = timedelta(seconds=sender.deadline - time.monotonic())
        ends.append((outbox.clock.now + window, outbox.gate().probe_until))
        return BatchSummary()

    sender = DeadlineNoted(dispatcher.sender, note_the_deadline)
    dispatcher.sender = sender

    probe = dispatcher.dispatch_once()

    assert probe.requests >= 1 and probe.accepted >= 1  # the probe went out, and was answered
    deadline, lease_end = ends[0]
    assert lease_end is not None and deadline <= lease_end


class DeadlineNoted(WhileSending):
    """A sender that keeps each request's deadline where ``meanwhile`` can read it."""

    deadline = 0.0

    def send(self, batch: Sequence[Communication], *, deadline: float | None = None) -> SendResult:
        self.deadline = deadline if deadline is not None else float("inf")
        return super().send(batch, deadline=deadline)


def test_a_probe_held_while_waiting_for_its_slot_gives_its_lease_back(outbox: Outbox) -> None:
    """A 429 pauses everyone while the probe waits for its slot: the probe sends nothing, and
    its lease is free for the next probe once the pause ends, not when the lease would lapse."""
    outbox.enqueue_ordinary(3)
    now = outbox.clock.now
    outbox.set_gate(failures=3, reason="ServerError: HTTP 503", next_probe_at=now)
    outbox.set_gate(rate=1.0, next_send_at=now + timedelta(seconds=1))
    dispatcher = outbox.dispatcher()

    dispatcher.sleep = another_worker_pauses_everyone(outbox, seconds=2)

    summary = dispatcher.dispatch_once()

    assert (summary.state, summary.requests, summary.released) == ("paused", 0, 3)
    assert outbox.gate().probe_until is None  # the next probe need not wait for it to lapse
    outbox.clock.advance(2)
    assert dispatcher.dispatch_once().accepted == 3


def another_worker_pauses_everyone(outbox: Outbox, seconds: float) -> Callable[[float], None]:
    """A dispatcher's ``sleep``: while it waits for its slot, a 429 pauses everyone."""

    def sleep(wait: float) -> None:
        outbox.sleeps.append(wait)
        with outbox.engine.begin() as connection:
            transitions.note_rate_limited(
                connection,
                now=outbox.clock.now,
                reason="RateLimited: HTTP 429",
                pause_until=outbox.clock.now + timedelta(seconds=seconds),
            )

    return sleep


def test_an_answered_probe_that_could_not_close_the_circuit_sends_no_more(
    outbox: Outbox,
) -> None:
    """While the probe is out, a request another worker started before it fails and is counted:
    the probe's answer is older news and leaves the circuit open. The rest of the probe's batch
    goes back unspent, and the next probe comes a probe interval on: nothing goes out as if the
    circuit were closed while its lease runs out."""
    outbox.enqueue_ordinary(5)
    before = outbox.clock.now - timedelta(seconds=1)
    outbox.set_gate(failures=3, reason="ServerError: HTTP 503", next_probe_at=outbox.clock.now)
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=5)

    def an_older_request_fails() -> BatchSummary:  # while the probe's request is out
        if outbox.gate().failures > 3:
            return BatchSummary()
        with outbox.engine.begin() as connection:
            counted = transitions.count_failure_unless_answered_since(
                connection,
                started=before,
                now=outbox.clock.now,
                reason="TransportError: timed out",
                pause_until=outbox.clock.now,
                threshold=3,
                probe_at=outbox.clock.now,
            )
        assert counted
        outbox.clock.advance(0.1)
        return BatchSummary()

    dispatcher.sender = WhileSending(dispatcher.sender, an_older_request_fails)

    probe = dispatcher.dispatch_once()

    assert (probe.requests, probe.accepted, probe.released) == (1, 1, 4)
    gate = outbox.gate()
    assert gate.circuit_open(3) and gate.probe_until is None
    assert gate.next_probe_at is not None and gate.next_probe_at > outbox.clock.now


def test_a_refused_keys_try_without_an_answer_is_tried_again_a_probe_interval_on(
    outbox: Outbox,
) -> None:
    """The key's try meets a 503: nothing was learnt of the key, so the next try is not a
    whole refused-key interval away; its message is not spent."""
    outbox.sandbox.set_faults(forbidden=True)
    outbox.enqueue_ordinary(2)
    dispatcher = outbox.dispatcher()
    assert dispatcher.dispatch_once().state == "alarm"  # the key is refused
    outbox.sandbox.set_faults(forbidden=False, outage=True)
    outbox.clock.advance(KEY_RETRY.total_seconds())

    tried = dispatcher.dispatch_once()

    assert (tried.requests, tried.released) == (1, 2)
    assert key_view(outbox, "sandbox").key_next_probe_at == outbox.clock.now + PROBE_INTERVAL
    assert {(r.status, r.attempts) for r in outbox.rows().values()} == {(Status.PENDING, 0)}


def test_a_probe_that_waited_for_its_slot_still_has_the_whole_timeout(outbox: Outbox) -> None:
    """The API answers in 4.5 s of a 5 s timeout, and the probe waited 1.9 s for its slot: its
    lease covers that wait, so its request is not cut short, times out at the API and is sent
    again; it is answered and closes the circuit."""
    messages = outbox.enqueue_ordinary(3)
    now = outbox.clock.now
    outbox.set_gate(failures=3, reason="ServerError: HTTP 503", next_probe_at=now)
    outbox.set_gate(rate=0.5, next_send_at=now + timedelta(seconds=1.9))
    dispatcher = outbox.dispatcher(WIRAYA_TIMEOUT_SECONDS=5)
    dispatcher.sleep = outbox.clock.advance
    dispatcher.sender = SlowApi(dispatcher.sender, outbox.clock, seconds=4.5)

    probe = dispatcher.dispatch_once()

    assert (probe.requests, probe.accepted) == (2, 3)  # the probe, then the rest at once
    assert not outbox.gate().circuit_open(3)
    outbox.settle(dispatcher)
    ledger = outbox.sandbox.ledger()
    assert {m: ledger[m].times_received for m in messages} == {m: 1 for m in messages}


def test_the_shortest_lease_accepted_holds_a_slot_wait_and_the_whole_timeout(
    outbox: Outbox,
) -> None:
    """The least settings a worker starts with (a timeout of 0.5 s, a lease 4 s longer): after a
    slot wait of 1.9 s, and 0.9 s of the claim's own work, a batch still has the whole timeout
    for its request, so every message goes out, once, however slowly the API answers within
    it."""
    messages = outbox.enqueue_ordinary(3)
    outbox.set_gate(rate=0.5, next_send_at=outbox.clock.now + timedelta(seconds=1.9))
    dispatcher = outbox.dispatcher(WIRAYA_TIMEOUT_SECONDS=0.5, OUTBOX_LEASE_SECONDS=4.5)
    dispatcher.sleep = lambda wait: outbox.clock.advance(wait + 0.9)  # and the claim's work
    dispatcher.sender = SlowApi(dispatcher.sender, outbox.clock, seconds=0.45)

    sent = dispatcher.dispatch_once()

    assert (sent.requests, sent.accepted) == (1, 3)
    ledger = outbox.sandbox.ledger()
    assert {m: ledger[m].times_received for m in messages} == {m: 1 for m in messages}
