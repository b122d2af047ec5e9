"""The sending gate as the dispatcher meets it: refused keys, 429s, outages and the circuit.

Every test drives ``Dispatcher.dispatch_once`` (or ``dispatch``) in-process (no Celery) with an
injected clock; waiting out a backoff, a lease or a Retry-After is a move of the clock. Rows are
compared with the sandbox's ledger: what Wiraya would hold.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from models import Status
from sandbox.faults import Faults
from sandbox.testing import running_sandbox
from tests.integration.dispatch.harness import (
    Outbox,
    WhileSending,
)
from worker.dispatch.retry import key_fingerprint


def test_refused_key_stops_sending_and_another_key_resumes(postgres_engine: Engine) -> None:
    with running_sandbox(api_key="right-key") as sandbox:
        outbox = Outbox(postgres_engine, sandbox)
        try:
            messages = outbox.enqueue_ordinary(3)
            wrong = outbox.dispatcher(WIRAYA_API_KEY="wrong-key")

            summary = wrong.dispatch_once()

            assert (summary.state, summary.released, summary.failed) == ("alarm", 3, 0)
            assert summary.alarm is not None and summary.alarm.startswith("Unauthorized")
            for row in outbox.rows().values():
                assert (row.status, row.attempts, row.tracking_id) == (Status.PENDING, 0, None)
            gate = outbox.gate()
            assert gate.refused_key == key_fingerprint("wrong-key")
            assert gate.paused_until is not None and gate.paused_until > outbox.clock.now
            assert gate.failures == 1
            assert sandbox.status_count(401) == 1 and sandbox.ledger() == {}

            # The refused key sends nothing more while paused...
            outbox.clock.advance(30)
            assert wrong.dispatch_once().state == "paused"
            assert wrong.due_batches(outbox.clock.now) == 0
            assert sandbox.request_count == 1
            # ...but the operator's new key is not held back by the old key's pause.
            right = outbox.dispatcher(WIRAYA_API_KEY="right-key")
            summaries = outbox.drain(right)

            assert sum(s.accepted for s in summaries) == 3
            ledger = sandbox.ledger()
            for client_message_id in messages:
                row = outbox.row(client_message_id)
                assert (row.status, row.attempts) == (Status.ACCEPTED, 1)
                assert row.tracking_id == ledger[client_message_id].tracking_id
            gate = outbox.gate()
            assert (gate.refused_key, gate.failures, gate.paused_until) == (None, 0, None)
        finally:
            outbox.close()


def test_forbidden_leaves_messages_pending_and_the_refused_key_only_probes(
    pg_outbox: Outbox,
) -> None:
    pg_outbox.sandbox.set_faults(forbidden=True)
    pg_outbox.enqueue_ordinary(4)
    dispatcher = pg_outbox.dispatcher()

    summary = dispatcher.dispatch_once()

    assert (summary.state, summary.released, summary.failed) == ("alarm", 4, 0)
    assert summary.alarm is not None and summary.alarm.startswith("Unauthorized: HTTP 403")
    assert {(r.status, r.attempts) for r in pg_outbox.rows().values()} == {(Status.PENDING, 0)}
    gate = pg_outbox.gate()
    assert gate.refused_key == dispatcher.key and gate.paused_until is not None
    assert dispatcher.dispatch_once().state == "paused"
    assert pg_outbox.sandbox.request_count == 1

    # Once the pause is over the refused key tries one message, not a batch.
    pg_outbox.clock.move_to(gate.paused_until)
    probe = dispatcher.dispatch_once()

    assert (probe.state, probe.claimed, probe.requests) == ("alarm", 1, 1)
    assert dispatcher.dispatch_once().state == "paused"
    assert pg_outbox.sandbox.request_count == 2
    assert {(r.status, r.attempts) for r in pg_outbox.rows().values()} == {(Status.PENDING, 0)}


def test_rate_limit_pauses_at_least_retry_after_then_slows_down(pg_outbox: Outbox) -> None:
    # One request's worth of tokens, then 429 with Retry-After: 30.
    pg_outbox.sandbox.set_faults(rate_limit=0.001, retry_after=timedelta(seconds=30))
    pg_outbox.enqueue_ordinary(15)
    dispatcher = pg_outbox.dispatcher(OUTBOX_BATCH_SIZE=5)
    assert dispatcher.dispatch_once().accepted == 5
    limited_at = pg_outbox.clock.now

    summary = dispatcher.dispatch_once()

    assert (summary.state, summary.released, summary.failed) == ("alarm", 5, 0)
    assert pg_outbox.sandbox.status_count(429) == 1
    gate = pg_outbox.gate()
    assert gate.paused_until is not None
    assert gate.paused_until >= limited_at + timedelta(seconds=30)  # Retry-After is a floor
    assert gate.failures == 0  # a 429 is not a backend failure: it does not open the circuit
    assert gate.spacing == timedelta(milliseconds=50)  # requests are spaced from now on
    released = [r for r in pg_outbox.rows().values() if r.status == Status.PENDING]
    assert len(released) == 10
    assert {r.attempts for r in released} == {0}
    assert min(r.next_attempt_at for r in released if r.last_error) >= limited_at + timedelta(
        seconds=30
    )

    pg_outbox.clock.move_to(limited_at + timedelta(seconds=29.9))
    paused = dispatcher.dispatch_once()
    assert (paused.state, paused.claimed) == ("paused", 0)
    assert pg_outbox.sandbox.request_count == 2

    # Still limited at the end of the pause: a second 429 doubles the spacing.
    pg_outbox.clock.move_to(gate.paused_until)
    assert dispatcher.dispatch_once().state == "alarm"
    assert pg_outbox.gate().spacing == timedelta(milliseconds=100)

    pg_outbox.sandbox.set_faults(rate_limit=None)
    second_pause = pg_outbox.gate().paused_until
    assert second_pause is not None and second_pause >= pg_outbox.clock.now + timedelta(seconds=30)
    pg_outbox.clock.move_to(second_pause)
    summaries = pg_outbox.drain(dispatcher)

    assert sum(s.accepted for s in summaries) == 10
    assert {r.status for r in pg_outbox.rows().values()} == {Status.ACCEPTED}
    assert {r.attempts for r in pg_outbox.rows().values()} == {1}
    # Slowed down: the two batches, sent at one instant, were spaced by the 100 ms slot.
    assert [s.claimed for s in summaries] == [5, 5]
    assert pg_outbox.sleeps[0] == pytest.approx(0.1)
    assert pg_outbox.gate().spacing < timedelta(milliseconds=100)  # answered: loosened again


REQUEST_FAILURES = {
    # name: (faults, client timeout, the failure's type, whether the sandbox did the work)
    "500": (Faults(p500=1.0), 5, "ServerError: HTTP 500", False),
    "503": (Faults(p503=1.0), 5, "ServerError: HTTP 503", False),
    "HTML 502": (Faults(p502_html=1.0), 5, "ServerError: HTTP 502: HTML page", False),
    "outage": (Faults(outage=True), 5, "ServerError: HTTP 503", False),
    "bad JSON": (Faults(p_bad_json=1.0), 5, "ServerError: HTTP 200 with a body", True),
    "dropped": (Faults(p_drop=1.0), 5, "TransportError", True),
    "timeout": (Faults(slow_after_work=timedelta(seconds=5)), 0.25, "TransportError: timed", True),
}


@pytest.mark.parametrize(
    ("faults", "timeout", "reason", "work_done"),
    REQUEST_FAILURES.values(),
    ids=list(REQUEST_FAILURES),
)
def test_request_failure_releases_rows_without_spending_attempts(
    pg_outbox: Outbox, faults: Faults, timeout: float, reason: str, work_done: bool
) -> None:
    messages = pg_outbox.enqueue_ordinary(4)
    pg_outbox.sandbox.set_faults(faults)
    dispatcher = pg_outbox.dispatcher(WIRAYA_TIMEOUT_SECONDS=timeout)

    summary = dispatcher.dispatch_once()

    assert (summary.state, summary.released, summary.accepted, summary.failed) == (
        "alarm",
        4,
        0,
        0,
    )
    gate = pg_outbox.gate()
    assert gate.failures == 1
    assert gate.paused_until is not None and gate.paused_until > pg_outbox.clock.now
    assert gate.reason is not None and gate.reason.startswith(reason)
    for row in pg_outbox.rows().values():
        assert (row.status, row.attempts, row.tracking_id) == (Status.PENDING, 0, None)
        assert row.last_error == gate.reason
        assert row.next_attempt_at == gate.paused_until
    ledger = pg_outbox.sandbox.ledger()
    assert set(ledger) == (set(messages) if work_done else set())
    assert dispatcher.dispatch_once().state == "paused"
    assert pg_outbox.sandbox.request_count == 1

    pg_outbox.sandbox.set_faults(Faults())
    pg_outbox.clock.move_to(gate.paused_until)
    assert dispatcher.dispatch_once().accepted == 4

    resent = pg_outbox.sandbox.ledger()
    for client_message_id in messages:
        row, entry = pg_outbox.row(client_message_id), resent[client_message_id]
        assert (row.status, row.attempts) == (Status.ACCEPTED, 1)
        assert row.tracking_id == entry.tracking_id
        # A resend only when the outcome was unknown, and then under the same id:
        # the sandbox kept its first tracking id.
        assert entry.times_received == (2 if work_done else 1)
        if work_done:
            assert entry.tracking_id == ledger[client_message_id].tracking_id
    assert pg_outbox.gate().failures == 0


def test_circuit_opens_after_repeated_failures_and_sends_one_probe_per_cool_down(
    pg_outbox: Outbox,
) -> None:
    pg_outbox.enqueue_ordinary(11)  # one probe and two full batches once it closes
    pg_outbox.sandbox.set_faults(outage=True)
    one = pg_outbox.dispatcher(OUTBOX_BATCH_SIZE=5, OUTBOX_CIRCUIT_FAILURES=3)
    other = pg_outbox.dispatcher(OUTBOX_BATCH_SIZE=5, OUTBOX_CIRCUIT_FAILURES=3)
    clock = pg_outbox.clock

    for failures in (1, 2, 3):  # below the threshold: full batches, each failure pauses all
        summary = one.dispatch_once()
        assert (summary.state, summary.claimed, summary.requests) == ("alarm", 5, 1)
        assert other.dispatch_once().state == "paused"
        gate = pg_outbox.gate()
        assert gate.failures == failures and gate.paused_until is not None
        clock.move_to(gate.paused_until)
    assert pg_outbox.sandbox.request_count == 3

    # While a probe is in flight, the other worker must not send a probe of its own.
    probing = WhileSending(one.sender, other.dispatch_once)
    one.sender = probing
    for failures in (4, 5, 6):  # open: one probe of one message per cool-down
        sent_before = pg_outbox.sandbox.request_count
        probe, after = one.dispatch_once(), other.dispatch_once()
        assert (probe.state, probe.claimed, probe.requests) == ("alarm", 1, 1)
        assert probing.seen[-1].state == "paused"
        assert after.state == "paused"
        gate = pg_outbox.gate()
        assert gate.failures == failures and gate.paused_until is not None
        cool_down = gate.paused_until - clock.now
        for fraction in (0.1, 0.5, 0.99):
            clock.move_to(gate.paused_until - cool_down * (1 - fraction))
            assert one.dispatch_once().state == "paused"
            assert other.dispatch_once().state == "paused"
        assert pg_outbox.sandbox.request_count == sent_before + 1
        clock.move_to(gate.paused_until)

    pg_outbox.sandbox.set_faults(outage=False)
    probe = one.dispatch_once()
    assert (probe.state, probe.claimed, probe.accepted) == ("sent", 1, 1)
    assert [s.state for s in probing.seen] == ["paused"] * 4
    gate = pg_outbox.gate()
    assert (gate.failures, gate.paused_until, gate.reason) == (0, None, None)  # closed
    assert other.dispatch_once().claimed == 5  # full batches again, at once
    assert one.dispatch_once().claimed == 5
    rows = pg_outbox.rows().values()
    assert {(r.status, r.attempts) for r in rows} == {(Status.ACCEPTED, 1)}
    assert pg_outbox.sandbox.status_count(503) == 6
