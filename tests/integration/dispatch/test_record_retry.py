"""A record that fails after the API accepted is retried within the lease, never a resend.

The failure is real: a trigger on outbox_messages that raises for the record's rows (sending
rows losing their claim token), as a broken trigger, a missing privilege or a dropped
connection would make the statement fail. The sandbox's ledger says how often Wiraya
received each message. Time is the test's: the retries' waits move both the outbox's clock
and the worker's monotonic clock, so no test waits out a lease.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text

from models import Status
from tests.integration.dispatch.harness import Outbox
from worker.dispatch.dispatcher import Dispatcher
from worker.dispatch.recorder import LEASE_MARGIN, RETRY_WAIT_MAX, Recorder

TRIGGER = "outbox_test_refuse_records"
# The record's rows, and only those: sending rows whose claim token is cleared.
RECORDING = "OLD.status = 'sending' AND NEW.claim_token IS NULL"
POSTGRES_REFUSAL = f"""
CREATE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('{TRIGGER}') <= %(times)s THEN
        RAISE EXCEPTION 'the record is refused for now';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER {TRIGGER} BEFORE UPDATE ON outbox_messages FOR EACH ROW
    WHEN ({RECORDING}) EXECUTE FUNCTION {TRIGGER}();
"""
SQLITE_REFUSAL = f"""
CREATE TRIGGER {TRIGGER} BEFORE UPDATE ON outbox_messages FOR EACH ROW
    WHEN {RECORDING} BEGIN SELECT RAISE(ABORT, 'the record is refused'); END
"""


def refuse_records(engine: Engine, times: int) -> None:
    """Make record statements fail: on PostgreSQL the first ``times`` of them (a sequence,
    which a failed statement does not roll back), on SQLite every one until it is dropped."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"CREATE SEQUENCE {TRIGGER}"))
            connection.exec_driver_sql(POSTGRES_REFUSAL % {"times": times})
        else:
            connection.execute(text(SQLITE_REFUSAL))


def allow_records(engine: Engine) -> None:
    with engine.begin() as connection:
        on = " ON outbox_messages" if engine.dialect.name == "postgresql" else ""
        connection.execute(text(f"DROP TRIGGER IF EXISTS {TRIGGER}{on}"))


class WorkerTime:
    """The worker's monotonic clock and sleep, moving the outbox's clock along."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.now = 1_000.0
        self.waits: list[float] = []
        self.on_wait: Callable[[int], None] = lambda count: None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        self.outbox.clock.advance(seconds)
        self.on_wait(len(self.waits))


def dispatcher(outbox: Outbox, time: WorkerTime) -> Dispatcher:
    """The harness's dispatcher, its record's retries on the test's time."""
    worker = outbox.dispatcher()
    worker.recorder = Recorder(
        outbox.engine,
        lease=worker.settings.lease,
        clock=outbox.clock,
        sleep=time.sleep,
        monotonic=time.monotonic,
    )
    return worker


def assert_received_once_and_accepted(outbox: Outbox, messages: list[str]) -> None:
    ledger = outbox.sandbox.ledger()
    for client_message_id in messages:
        row, entry = outbox.row(client_message_id), ledger[client_message_id]
        assert entry.times_received == 1
        assert (row.status, row.tracking_id) == (Status.ACCEPTED, entry.tracking_id)


def test_a_failed_record_is_retried_and_the_batch_never_sent_again(outbox: Outbox) -> None:
    messages = outbox.enqueue_ordinary(3)
    refuse_records(outbox.engine, times=3)
    time = WorkerTime(outbox)
    if outbox.engine.dialect.name == "sqlite":
        time.on_wait = lambda count: allow_records(outbox.engine) if count == 3 else None
    worker = dispatcher(outbox, time)

    summary = worker.dispatch_once()

    assert (summary.state, summary.accepted, summary.requests) == ("sent", 3, 1)
    assert len(time.waits) == 3  # three refusals, three short waits, then it landed
    assert sum(time.waits) < 1
    assert_received_once_and_accepted(outbox, messages)
    outbox.clock.advance(worker.settings.lease.total_seconds() + 1)
    assert worker.dispatch_once().state == "idle"  # nothing comes back to be sent again
    assert outbox.sandbox.request_count == 1


def test_a_worker_that_cannot_record_stops_claiming_says_so_once_and_resumes(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    first = outbox.enqueue_ordinary(3)
    refuse_records(outbox.engine, times=1_000_000)
    time = WorkerTime(outbox)
    worker = dispatcher(outbox, time)
    lease = worker.settings.lease
    claimed_at = outbox.clock.now

    with caplog.at_level(logging.WARNING, logger="worker.dispatch"):
        given_up = worker.dispatch_once()
        later = outbox.enqueue_ordinary(3)
        held = [worker.dispatch_once() for _ in range(3)]

    assert (given_up.state, given_up.accepted, given_up.requests) == ("alarm", 0, 1)
    assert given_up.alarm is not None and given_up.alarm.startswith("cannot record: ")
    # Retried until the lease neared its end, never past it.
    assert outbox.clock.now <= claimed_at + lease - LEASE_MARGIN
    assert outbox.clock.now >= claimed_at + lease - LEASE_MARGIN - RETRY_WAIT_MAX
    for summary in held:
        assert (summary.state, summary.claimed) == ("paused", 0)
        assert summary.alarm is not None and summary.alarm.startswith("cannot record: ")
    assert outbox.sandbox.request_count == 1  # no more sent while it cannot record
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot record outcomes" in errors[0].getMessage()
    for client_message_id in first:
        row = outbox.row(client_message_id)
        assert (row.status, row.tracking_id) == (Status.SENDING, None)

    allow_records(outbox.engine)
    trial = worker.dispatch_once()
    assert (trial.state, trial.claimed, trial.accepted) == ("sent", 1, 1)  # a trial of one
    assert worker.dispatch_once().accepted == 2
    assert_received_once_and_accepted(outbox, later)

    # The unrecorded batch comes back after its lease, and is sent again under the same
    # clientMessageId: Wiraya answers with the tracking id it gave the first time.
    before = outbox.sandbox.ledger()
    outbox.clock.move_to(claimed_at + lease)
    again = worker.dispatch_once()
    assert (again.claimed, again.accepted) == (3, 3)
    ledger = outbox.sandbox.ledger()
    for client_message_id in first:
        row, entry = outbox.row(client_message_id), ledger[client_message_id]
        assert entry.times_received == 2
        assert row.tracking_id == entry.tracking_id == before[client_message_id].tracking_id


def test_a_stale_record_is_refused_by_the_claim_token(outbox: Outbox) -> None:
    # The lease ends while the record is being retried (a clock stepped forward): another
    # worker claims the rows, sends and records them; the stale retry then writes nothing.
    messages = outbox.enqueue_ordinary(3)
    refuse_records(outbox.engine, times=1_000_000)
    time, rival_time = WorkerTime(outbox), WorkerTime(outbox)
    stale, rival = dispatcher(outbox, time), dispatcher(outbox, rival_time)
    taken_over: list[str] = []

    def lease_ends_and_a_rival_takes_over(count: int) -> None:
        if count == 2:
            outbox.clock.advance(stale.settings.lease.total_seconds())
            allow_records(outbox.engine)
            taken_over.append(rival.dispatch_once().state)

    time.on_wait = lease_ends_and_a_rival_takes_over

    summary = stale.dispatch_once()

    assert taken_over == ["sent"]
    assert (summary.state, summary.accepted, summary.released, summary.retried) == (
        "sent",
        0,
        0,
        0,
    )
    ledger = outbox.sandbox.ledger()
    for client_message_id in messages:
        row = outbox.row(client_message_id)
        assert (row.status, row.tracking_id) == (
            Status.ACCEPTED,
            ledger[client_message_id].tracking_id,
        )
        assert row.attempts == 2  # the rival's claim: the stale results (attempts 1) refused
        assert ledger[client_message_id].times_received == 2


def test_the_hold_ends_by_itself_once_the_lease_is_over(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    # Records keep failing: after the lease the worker tries one message, not a batch.
    first = outbox.enqueue_ordinary(3)
    refuse_records(outbox.engine, times=1_000_000)
    worker = dispatcher(outbox, WorkerTime(outbox))
    claimed_at = outbox.clock.now

    with caplog.at_level(logging.WARNING, logger="worker.dispatch"):
        assert worker.dispatch_once().state == "alarm"
        assert worker.dispatch_once().state == "paused"
        outbox.clock.move_to(claimed_at + worker.settings.lease)
        trial = worker.dispatch_once()
        assert worker.dispatch_once().state == "paused"

    assert (trial.state, trial.claimed, trial.requests, trial.accepted) == ("alarm", 1, 1, 0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # said once, not per batch
    ledger = outbox.sandbox.ledger()
    assert sorted(ledger[m].times_received for m in first) == [1, 1, 2]
