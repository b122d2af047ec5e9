"""Evidence that a message may have reached Wiraya outlives every later attempt.

A request that ended with its outcome unknown (a timeout after it began, a dropped connection)
may have been processed: the sandbox's ledger shows that it was. Whatever the next claim of
the message meets (a 429, a release with no reason), `outbox cancel` must still leave it
pending and say so, unless told `--include-sent`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from models import OutboxMessage, Status
from sandbox.faults import Faults
from tests.integration.dispatch.harness import PERMANENT, TRANSIENT_FOREVER, Outbox
from worker.ops.cli import main


def cancel_all(outbox: Outbox, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    capsys.readouterr()
    assert main(["--database-url", outbox.url, "cancel", "--all", "--yes", *flags]) == 0
    return capsys.readouterr().out


def inspect(outbox: Outbox, capsys: pytest.CaptureFixture[str], client_message_id: str) -> dict:
    capsys.readouterr()
    assert main(["--database-url", outbox.url, "inspect", client_message_id, "--json"]) == 0
    shown: dict = json.loads(capsys.readouterr().out)
    return shown


def unknown_outcome_then_paused(outbox: Outbox, faults: Faults, timeout: float) -> list[str]:
    """Two messages whose request got no answer after the sandbox did the work."""
    messages = outbox.enqueue_ordinary(2)
    outbox.sandbox.set_faults(faults)
    first = outbox.dispatcher(WIRAYA_TIMEOUT_SECONDS=timeout).dispatch_once()
    assert (first.state, first.released) == ("alarm", 2)
    assert set(outbox.sandbox.ledger()) == set(messages)  # Wiraya has them
    for client_message_id in messages:
        assert outbox.row(client_message_id).last_error.startswith("TransportError")
    paused_until = outbox.gate().paused_until
    assert paused_until is not None
    outbox.clock.move_to(paused_until)
    return messages


def assert_cancel_leaves_them(
    outbox: Outbox, capsys: pytest.CaptureFixture[str], messages: list[str]
) -> None:
    out = cancel_all(outbox, capsys)
    assert "all 2 of the pending messages selected may already have reached Wiraya" in out
    for client_message_id in messages:
        row = outbox.row(client_message_id)
        assert row.status == Status.PENDING
        assert row.reach_evidence is not None and row.reach_evidence.startswith("TransportError")
        shown = inspect(outbox, capsys, client_message_id)
        assert shown["reach_evidence"] == row.reach_evidence

    out = cancel_all(outbox, capsys, "--include-sent")
    assert "(2 of them may already have reached Wiraya)" in out
    assert {outbox.row(m).status for m in messages} == {Status.CANCELLED}


def test_a_429_after_a_timeout_does_not_erase_the_evidence(
    outbox: Outbox, capsys: pytest.CaptureFixture[str]
) -> None:
    # The limiter's bucket holds one request: the slow one passes, the next draws a 429.
    slow_then_limited = Faults(
        slow_after_work=timedelta(seconds=5),
        rate_limit=0.001,
        retry_after=timedelta(seconds=30),
    )
    messages = unknown_outcome_then_paused(outbox, slow_then_limited, timeout=0.75)

    limited = outbox.dispatcher().dispatch_once()

    assert (limited.state, limited.released) == ("alarm", 2)
    assert outbox.sandbox.status_count(429) == 1
    for client_message_id in messages:
        assert outbox.row(client_message_id).last_error.startswith("RateLimited")
    assert_cancel_leaves_them(outbox, capsys, messages)


def test_a_release_with_no_reason_does_not_erase_the_evidence(
    outbox: Outbox, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = unknown_outcome_then_paused(outbox, Faults(p_drop=1.0), timeout=5)
    outbox.sandbox.set_faults(Faults())
    asked = iter([False])  # asked to stop once the batch is claimed: a stop on shutdown
    stopping = outbox.dispatcher()
    stopping.should_stop = stopping.batch_sender.should_stop = lambda: next(asked, True)

    stopped = stopping.dispatch_once()

    assert (stopped.claimed, stopped.requests, stopped.released) == (2, 0, 2)
    for client_message_id in messages:
        assert outbox.row(client_message_id).last_error is None
    assert_cancel_leaves_them(outbox, capsys, messages)


def test_the_evidence_outlives_a_clear_answer_and_an_operators_retry(
    outbox: Outbox, capsys: pytest.CaptureFixture[str]
) -> None:
    [kept] = outbox.enqueue(TRANSIENT_FOREVER)
    outbox.sandbox.set_faults(p_drop=1.0)
    dispatcher = outbox.dispatcher(OUTBOX_MAX_ATTEMPTS=1)
    assert dispatcher.dispatch_once().released == 1
    outbox.sandbox.set_faults(Faults())
    [rejected] = outbox.enqueue(PERMANENT)  # a clear answer only: it never reached Wiraya
    paused_until = outbox.gate().paused_until
    assert paused_until is not None
    outbox.clock.move_to(paused_until)
    assert dispatcher.dispatch_once().failed == 2
    assert outbox.row(kept).last_error.startswith("gave up after 1 attempts: ")
    with outbox.engine.begin() as connection:  # failed by the test's clock, ahead of the CLI's
        connection.execute(update(OutboxMessage).values(updated_at=datetime.now(UTC)))
    capsys.readouterr()
    assert main(["--database-url", outbox.url, "retry", "--all", "--yes"]) == 0
    assert "retried 2 messages" in capsys.readouterr().out

    out = cancel_all(outbox, capsys)

    assert "Cancel 1 of 2 pending messages (by lane: urgent 0, normal 2, bulk 0): 1 of them " in out
    assert "may already have reached Wiraya" in out
    assert (outbox.row(kept).status, outbox.row(rejected).status) == (
        Status.PENDING,
        Status.CANCELLED,
    )
    evidence = outbox.row(kept).reach_evidence
    assert evidence is not None and evidence.startswith("TransportError")
