"""The dispatcher against a real database and the sandbox over HTTP: design.md §5, row by row.

Every test drives ``Dispatcher.dispatch_once`` (or ``dispatch``, batches back to back)
in-process (no Celery) with an injected clock;
waiting out a backoff, a lease or a Retry-After is a move of the clock, never a sleep.
Assertions compare the outbox rows with the sandbox's ledger: what Wiraya would hold.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text

from models import Status
from sandbox.faults import Faults, Validation
from sandbox.testing import RunningSandbox, running_sandbox
from tests.integration.dispatch_harness import (
    ALPHA,
    OMITTED_ONCE,
    PERMANENT,
    TRANSIENT_FOREVER,
    TRANSIENT_TWICE,
    Outbox,
    WhileSending,
    outage_from,
    outbox_statements,
    recipient,
)
from worker import repository as repo
from worker.database import make_engine
from worker.dispatcher import BatchSummary, Dispatcher
from worker.repository import ClaimedRow
from worker.retry import key_fingerprint
from worker.wiraya import Communication, Delivered, encode_request


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(seed=3) as running:
        yield running


@pytest.fixture
def outbox(engine: Engine, sandbox: RunningSandbox) -> Iterator[Outbox]:
    """PostgreSQL and SQLite: the paths the embedded default must get right."""
    harness = Outbox(engine, sandbox)
    yield harness
    harness.close()


@pytest.fixture
def pg_outbox(postgres_engine: Engine, sandbox: RunningSandbox) -> Iterator[Outbox]:
    harness = Outbox(postgres_engine, sandbox)
    yield harness
    harness.close()


# -- result success ----------------------------------------------------------------------


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


# -- content invalid before sending (raw-SQL inserts) --------------------------------------

INVALID_ROWS = {
    # clientMessageId: (recipient, content, the field the reason must name)
    "sender-12": (
        recipient(901),
        {"$type": "SMSFromAlpha", "sender": "ABCDEFGHIJKL", "text": "hi"},
        "content.sender",
    ),
    "unknown-type": (
        recipient(902),
        {"$type": "CarrierPigeon", "projectId": 1, "placeholders": []},
        "content.$type",
    ),
    "project-id-text": (
        recipient(903),
        {"$type": "SMSProject", "projectId": "12", "placeholders": ["Jane"]},
        "content.projectId",
    ),
    "recipient-hello": (
        "hello",
        {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "hi"},
        "recipient",
    ),
}


def test_invalid_rows_fail_at_once_with_a_reason_and_are_never_sent(outbox: Outbox) -> None:
    good = outbox.enqueue_ordinary(2)
    for client_message_id, (to, content, _) in INVALID_ROWS.items():
        outbox.insert_raw(client_message_id, to, content)
    good += outbox.enqueue_ordinary(2)

    summary = outbox.dispatcher().dispatch_once()

    assert (summary.claimed, summary.accepted, summary.failed) == (8, 4, 4)
    assert summary.requests == 1
    rows = outbox.rows()
    for client_message_id, (_, _, field) in INVALID_ROWS.items():
        row = rows[client_message_id]
        assert row.status == Status.FAILED
        assert row.last_error is not None and row.last_error.startswith(f"invalid: {field}:")
        assert row.attempts == 0  # never sent: the claim's attempt is given back
        assert row.tracking_id is None
    assert set(outbox.sandbox.ledger()) == set(good)  # the sandbox never saw a bad row
    assert all(rows[client_message_id].status == Status.ACCEPTED for client_message_id in good)


def test_a_batch_of_only_invalid_rows_sends_no_request(outbox: Outbox) -> None:
    for client_message_id, (to, content, _) in INVALID_ROWS.items():
        outbox.insert_raw(client_message_id, to, content)

    summary = outbox.dispatcher().dispatch_once()

    assert (summary.state, summary.failed, summary.requests) == ("sent", 4, 0)
    assert outbox.sandbox.request_count == 0
    assert {row.status for row in outbox.rows().values()} == {Status.FAILED}


def test_a_row_whose_content_is_not_json_fails_alone_on_sqlite(
    sqlite_url: str, sandbox: RunningSandbox
) -> None:
    engine = make_engine(sqlite_url)
    outbox = Outbox(engine, sandbox)
    try:
        good = outbox.enqueue_ordinary(2)
        with engine.begin() as connection:  # SQLite's JSON column is text: nothing refuses this
            connection.execute(
                text(
                    "INSERT INTO outbox_messages (client_message_id, recipient, content) "
                    "VALUES ('not-json', '46705000099', 'Hello Jane')"
                )
            )
        good += outbox.enqueue_ordinary(2)

        summary = outbox.dispatcher().dispatch_once()

        assert (summary.accepted, summary.failed) == (4, 1)
        with engine.connect() as connection:
            status, error = connection.execute(
                text("SELECT status, last_error FROM outbox_messages WHERE id = 3")
            ).one()
        assert status == Status.FAILED and error.startswith("invalid: content")
        assert set(outbox.sandbox.ledger()) == set(good)
    finally:
        outbox.close()
        engine.dispose()


# -- result failure, isTransientError true -------------------------------------------------


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


# -- result failure, isTransientError false ------------------------------------------------


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


# -- message missing from results ------------------------------------------------------------


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


# -- 400 for the batch --------------------------------------------------------------------

# A recipient our screening accepts but the API's validation refuses (the sandbox's test
# recipient ...0000005): only the API's 400 can find it, by splitting the batch.
REFUSED_BY_API = "46700000005"
VALID_CONTENT = {"$type": "SMSProject", "projectId": 12, "placeholders": ["Jane"]}


def test_bad_request_splits_the_batch_and_fails_only_the_bad_message(pg_outbox: Outbox) -> None:
    good = pg_outbox.enqueue_ordinary(3)
    pg_outbox.insert_raw("refused-by-api", REFUSED_BY_API, VALID_CONTENT)
    good += pg_outbox.enqueue_ordinary(4)
    dispatcher = pg_outbox.dispatcher()

    with outbox_statements(pg_outbox.engine) as statements:
        summary = dispatcher.dispatch_once()

    assert (summary.claimed, summary.accepted, summary.failed) == (8, 7, 1)
    # [8] 400 -> [4] 400 -> [2] ok, [2] 400 -> [1] ok, [1] 400 (fails it); [4] ok
    assert pg_outbox.sandbox.status_count(400) == 4
    assert pg_outbox.sandbox.status_count(200) == 3
    assert summary.requests == 7
    assert len(statements) <= 3  # splitting adds requests, not statements
    bad = pg_outbox.row("refused-by-api")
    assert (bad.status, bad.attempts, bad.tracking_id) == (Status.FAILED, 1, None)
    assert bad.last_error is not None
    assert bad.last_error.startswith("rejected: Invalid input format: communications[0]")
    assert "refused-by-api" in bad.last_error
    ledger, rows = pg_outbox.sandbox.ledger(), pg_outbox.rows()
    assert set(ledger) == set(good)
    for client_message_id in good:
        row = rows[client_message_id]
        assert (row.status, row.attempts) == (Status.ACCEPTED, 1)
        assert row.tracking_id == ledger[client_message_id].tracking_id
        assert ledger[client_message_id].times_received == 1
    gate = pg_outbox.gate()
    assert (gate.failures, gate.paused_until, gate.batch_limit) == (0, None, None)


def test_per_message_validation_fails_the_bad_message_without_splitting(
    pg_outbox: Outbox,
) -> None:
    pg_outbox.sandbox.set_faults(validation=Validation.MESSAGE)
    good = pg_outbox.enqueue_ordinary(3)
    pg_outbox.insert_raw("refused-by-api", REFUSED_BY_API, VALID_CONTENT)

    summary = pg_outbox.dispatcher().dispatch_once()

    assert (summary.requests, summary.accepted, summary.failed) == (1, 3, 1)
    bad = pg_outbox.row("refused-by-api")
    assert bad.status == Status.FAILED
    assert bad.last_error == (
        "rejected: recipient: not a valid mobile number (sandbox test recipient ...0000005)"
    )
    assert {pg_outbox.row(client_message_id).status for client_message_id in good} == {
        Status.ACCEPTED
    }


# -- 413, or 400 saying the batch is too large ------------------------------------------------


def _body_limit_for_four() -> int:
    """A body size (bytes) that takes four of the test's messages but not five."""
    four = [Communication(f"m{n}", recipient(n), ALPHA) for n in range(10, 14)]
    return len(encode_request(four))


@pytest.mark.parametrize(
    ("faults", "refusal"),
    [
        (Faults(max_batch=4), 400),  # {"bulkItemLimitExceeded": true}
        (Faults(max_body_bytes=_body_limit_for_four()), 413),  # a proxy's HTML 413
    ],
    ids=["400 bulkItemLimitExceeded", "413"],
)
def test_too_large_batch_is_split_and_the_smaller_size_remembered(
    pg_outbox: Outbox, faults: Faults, refusal: int
) -> None:
    pg_outbox.sandbox.set_faults(faults)
    first = pg_outbox.enqueue_ordinary(10)
    dispatcher = pg_outbox.dispatcher(OUTBOX_BATCH_SIZE=10)

    summary = dispatcher.dispatch_once()

    assert (summary.claimed, summary.accepted, summary.failed, summary.retried) == (10, 10, 0, 0)
    assert summary.alarm is None
    # [10] too large -> [5] too large -> [2] ok, [3] ok; [5] too large -> [2] ok, [3] ok
    assert pg_outbox.sandbox.status_count(refusal) == 3
    assert pg_outbox.sandbox.status_count(200) == 4
    rows, ledger = pg_outbox.rows(), pg_outbox.sandbox.ledger()
    for client_message_id in first:
        row = rows[client_message_id]
        assert (row.status, row.attempts) == (Status.ACCEPTED, 1)  # no attempt spent on splits
        assert row.tracking_id == ledger[client_message_id].tracking_id
    gate = pg_outbox.gate()
    assert gate.batch_limit is not None and 1 <= gate.batch_limit <= 4
    assert (gate.failures, gate.paused_until) == (0, None)  # not a backend failure

    pg_outbox.enqueue_ordinary(10)
    summary = dispatcher.dispatch_once()

    assert summary.claimed == gate.batch_limit
    assert (summary.requests, summary.accepted) == (1, gate.batch_limit)
    assert pg_outbox.sandbox.status_count(refusal) == 3  # no new refusal: the limit was kept


def test_a_split_that_would_outlast_the_lease_stops_and_releases_the_rest(
    pg_outbox: Outbox,
) -> None:
    pg_outbox.sandbox.set_faults(max_batch=4)
    messages = pg_outbox.enqueue_ordinary(10)
    dispatcher = pg_outbox.dispatcher(OUTBOX_LEASE_SECONDS=30, WIRAYA_TIMEOUT_SECONDS=5)
    claimed_at = pg_outbox.clock.now

    def ten_seconds_pass() -> BatchSummary:  # each request is slow
        pg_outbox.clock.advance(10)
        return BatchSummary()

    dispatcher.sender = WhileSending(dispatcher.sender, ten_seconds_pass)

    summary = dispatcher.dispatch_once()

    # Requests start at +10 s ([10] too large), +20 s ([5] too large), +30 s ([2] ok); the
    # next could not start before the lease (+30 s) minus the timeout (5 s): the rest is
    # released for another worker, spending no attempt, instead of sent by a worker whose
    # lease may end mid-request.
    assert summary.requests == 3
    assert (summary.accepted, summary.released, summary.failed) == (2, 8, 0)
    rows = [pg_outbox.row(m) for m in messages]
    assert [(r.status, r.attempts) for r in rows[:2]] == [(Status.ACCEPTED, 1)] * 2
    assert [(r.status, r.attempts) for r in rows[2:]] == [(Status.PENDING, 0)] * 8
    assert all(r.next_attempt_at <= pg_outbox.clock.now for r in rows[2:])  # due at once
    assert all(r.locked_until is None for r in rows)
    assert pg_outbox.clock.now > claimed_at + timedelta(seconds=25)
    assert set(pg_outbox.sandbox.ledger()) == set(messages[:2])


def test_a_failure_mid_split_keeps_the_answers_already_received(pg_outbox: Outbox) -> None:
    pg_outbox.sandbox.set_faults(max_batch=4)
    messages = pg_outbox.enqueue_ordinary(10)
    dispatcher = pg_outbox.dispatcher()
    dispatcher.sender = WhileSending(dispatcher.sender, outage_from(pg_outbox.sandbox, 5))

    summary = dispatcher.dispatch_once()

    # [10] too large, [5] too large, [2] ok, [3] ok, [5] 503: the first five are accepted,
    # the last five go back to pending with their attempt given back.
    assert (summary.state, summary.requests) == ("alarm", 5)
    assert (summary.accepted, summary.released, summary.failed) == (5, 5, 0)
    ledger = pg_outbox.sandbox.ledger()
    rows = [pg_outbox.row(m) for m in messages]
    for row in rows[:5]:
        assert (row.status, row.attempts) == (Status.ACCEPTED, 1)
        assert row.tracking_id == ledger[row.client_message_id].tracking_id
    assert [(r.status, r.attempts) for r in rows[5:]] == [(Status.PENDING, 0)] * 5
    gate = pg_outbox.gate()
    assert gate.failures == 1
    assert gate.batch_limit is not None and gate.batch_limit <= 4  # learnt before the outage


# -- 401 / 403 ----------------------------------------------------------------------------------


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


# -- 429 ------------------------------------------------------------------------------------


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


# -- 5xx, HTML pages, bad JSON, timeouts, connection errors ---------------------------------

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


# -- the circuit breaker ------------------------------------------------------------------------


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


# -- older than OUTBOX_MAX_AGE_SECONDS ----------------------------------------------------------


def test_message_older_than_max_age_fails_expired_without_being_sent(pg_outbox: Outbox) -> None:
    [old] = pg_outbox.enqueue(recipient(1))
    with pg_outbox.engine.begin() as connection:
        connection.execute(
            text("UPDATE outbox_messages SET created_at = created_at - interval '2 hours'")
        )
    [fresh] = pg_outbox.enqueue(recipient(2))

    summary = pg_outbox.dispatcher(OUTBOX_MAX_AGE_SECONDS=3600).dispatch_once()

    assert (summary.accepted, summary.failed, summary.requests) == (1, 1, 1)
    row = pg_outbox.row(old)
    assert (row.status, row.attempts) == (Status.FAILED, 0)
    assert row.last_error == "expired: not accepted within 1:00:00"
    assert set(pg_outbox.sandbox.ledger()) == {fresh}


def test_message_retried_past_max_age_fails_expired(pg_outbox: Outbox) -> None:
    [message] = pg_outbox.enqueue(TRANSIENT_FOREVER)
    dispatcher = pg_outbox.dispatcher(OUTBOX_MAX_AGE_SECONDS=120, OUTBOX_MAX_ATTEMPTS=100)
    assert dispatcher.dispatch_once().retried == 1

    pg_outbox.clock.advance(121)
    summary = dispatcher.dispatch_once()

    assert (summary.failed, summary.requests) == (1, 0)
    row = pg_outbox.row(message)
    assert row.status == Status.FAILED
    assert row.last_error is not None and row.last_error.startswith("expired")
    assert row.attempts == 1  # the one real send; the expiring claim is given back
    entry = pg_outbox.sandbox.entry(message)
    assert entry is not None and entry.times_received == 1


# -- the lease and the guard ----------------------------------------------------------------


def test_a_stale_worker_writes_nothing_after_another_claimed_its_rows(pg_outbox: Outbox) -> None:
    messages = pg_outbox.enqueue_ordinary(3)
    rival = pg_outbox.dispatcher()

    def lease_ends_and_rival_takes_over() -> BatchSummary:
        pg_outbox.clock.advance(rival.settings.lease.total_seconds() + 1)
        return rival.dispatch_once()

    with running_sandbox(Faults(outage=True)) as down:
        # The stale worker's answer, when it finally comes, is a 503: were its results
        # written, the rows would go back to pending although the rival delivered them.
        stale = pg_outbox.dispatcher(down.url)
        takeover = WhileSending(stale.sender, lease_ends_and_rival_takes_over)
        stale.sender = takeover

        summary = stale.dispatch_once()

    [rival_summary] = takeover.seen
    assert (rival_summary.claimed, rival_summary.accepted) == (3, 3)
    assert (summary.claimed, summary.requests) == (3, 1)
    assert (summary.accepted, summary.released, summary.retried, summary.failed) == (0, 0, 0, 0)
    ledger = pg_outbox.sandbox.ledger()
    for client_message_id in messages:
        row = pg_outbox.row(client_message_id)
        assert (row.status, row.last_error) == (Status.ACCEPTED, None)
        assert row.attempts == 2  # the stale claim and the rival's
        assert row.tracking_id == ledger[client_message_id].tracking_id
        assert ledger[client_message_id].times_received == 1


def _claim_and_die(outbox: Outbox, dispatcher: Dispatcher) -> list[ClaimedRow]:
    """What a worker killed after its claim committed leaves behind: rows under lease."""
    with outbox.engine.begin() as connection:
        return repo.claim(
            connection, limit=10, lease=dispatcher.settings.lease, now=outbox.clock.now
        )


@pytest.mark.parametrize("died", ["before sending", "after sending"])
def test_a_dead_workers_rows_are_claimed_again_after_the_lease(
    pg_outbox: Outbox, died: str
) -> None:
    messages = pg_outbox.enqueue_ordinary(3)
    dispatcher = pg_outbox.dispatcher()
    claimed = _claim_and_die(pg_outbox, dispatcher)
    assert [row.client_message_id for row in claimed] == messages
    if died == "after sending":  # the request reached the API, the results were never written
        batch = [Communication(r.client_message_id, r.recipient, r.content) for r in claimed]
        assert isinstance(dispatcher.sender.send(batch), Delivered)
    first_ledger = pg_outbox.sandbox.ledger()

    pg_outbox.clock.advance(dispatcher.settings.lease.total_seconds() - 1)
    assert dispatcher.dispatch_once().state == "idle"  # still under lease
    pg_outbox.clock.advance(1)  # the lease ends now
    summary = dispatcher.dispatch_once()

    assert (summary.claimed, summary.accepted) == (3, 3)
    assert dispatcher.dispatch_once().state == "idle"
    ledger = pg_outbox.sandbox.ledger()
    for client_message_id in messages:
        row, entry = pg_outbox.row(client_message_id), ledger[client_message_id]
        assert (row.status, row.attempts, row.locked_until) == (Status.ACCEPTED, 2, None)
        assert row.tracking_id == entry.tracking_id  # one tracking id per message
        if died == "after sending":
            assert entry.times_received == 2  # resent under the same id: de-duplicated
            assert entry.tracking_id == first_ledger[client_message_id].tracking_id
        else:
            assert entry.times_received == 1
    assert len(ledger) == 3


# -- concurrency on PostgreSQL ------------------------------------------------------------------


def test_two_dispatchers_drain_concurrently_without_sending_any_message_twice(
    pg_outbox: Outbox,
) -> None:
    total = 2_000
    messages = pg_outbox.enqueue_ordinary(total)
    dispatchers = [pg_outbox.dispatcher(OUTBOX_BATCH_SIZE=25) for _ in range(2)]
    start = threading.Barrier(len(dispatchers))

    def drain(dispatcher: Dispatcher) -> list[BatchSummary]:
        start.wait(timeout=10)
        return pg_outbox.drain(dispatcher, limit=total)

    with ThreadPoolExecutor(len(dispatchers)) as pool:
        results = [
            future.result(timeout=100) for future in [pool.submit(drain, d) for d in dispatchers]
        ]

    claimed = [sum(s.claimed for s in summaries) for summaries in results]
    assert sum(claimed) == total
    assert all(share > 0 for share in claimed), claimed  # both really worked
    assert sum(s.accepted for summaries in results for s in summaries) == total
    ledger = pg_outbox.sandbox.ledger()
    assert len(ledger) == total
    assert {entry.times_received for entry in ledger.values()} == {1}
    rows = pg_outbox.rows()
    assert {(row.status, row.attempts) for row in rows.values()} == {(Status.ACCEPTED, 1)}
    assert all(rows[m].tracking_id == ledger[m].tracking_id for m in messages)


# -- how many batches are due (beat's tick wakes that many dispatches) --------------------------


def test_due_batches_counts_batches_of_the_permitted_size(pg_outbox: Outbox) -> None:
    dispatcher = pg_outbox.dispatcher(OUTBOX_BATCH_SIZE=10, OUTBOX_MAX_PARALLEL_DISPATCHES=4)
    now = pg_outbox.clock.now
    assert dispatcher.due_batches(now) == 0
    pg_outbox.enqueue_ordinary(25)
    assert dispatcher.due_batches(now) == 3
    pg_outbox.enqueue_ordinary(30)
    assert dispatcher.due_batches(now) == 4  # capped at the parallel limit

    with pg_outbox.engine.begin() as connection:  # the API said batches above 5 are too large
        repo.limit_batch_size(connection, size=5, now=now)
        assert dispatcher.due_batches(now) == 4
        connection.execute(text("DELETE FROM outbox_messages WHERE id > 15"))
    assert dispatcher.due_batches(now) == 3  # 15 rows in batches of 5, not 2 of 10

    with pg_outbox.engine.begin() as connection:
        repo.note_failure(
            connection, now=now, paused_until=now + timedelta(seconds=9), reason="outage"
        )
    assert dispatcher.due_batches(now) == 0  # paused: wake nobody
    assert dispatcher.due_batches(now + timedelta(seconds=9)) == 3


# -- one dispatch, several batches (one Celery task sends a backlog batch after batch) ---------


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


def test_a_dispatch_stops_at_an_alarm_and_keeps_what_it_sent(pg_outbox: Outbox) -> None:
    messages = pg_outbox.enqueue_ordinary(30)
    dispatcher = pg_outbox.dispatcher(OUTBOX_BATCH_SIZE=10)
    dispatcher.sender = WhileSending(dispatcher.sender, outage_from(pg_outbox.sandbox, 2))

    summary = dispatcher.dispatch()

    assert (summary.state, summary.batches, summary.requests) == ("alarm", 2, 2)
    assert (summary.accepted, summary.released) == (10, 10)
    assert summary.alarm is not None and summary.alarm.startswith("ServerError")
    statuses = [pg_outbox.row(m).status for m in messages]
    assert statuses == [Status.ACCEPTED] * 10 + [Status.PENDING] * 20  # the third never claimed


def test_a_dispatch_ends_quietly_when_another_worker_paused_sending(pg_outbox: Outbox) -> None:
    pg_outbox.enqueue_ordinary(30)
    dispatcher = pg_outbox.dispatcher(OUTBOX_BATCH_SIZE=10)
    now = pg_outbox.clock.now

    def another_worker_meets_an_outage() -> BatchSummary:
        with pg_outbox.engine.begin() as connection:
            pause = now + timedelta(seconds=30)
            repo.note_failure(connection, now=now, paused_until=pause, reason="outage")
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


# -- statements per batch -------------------------------------------------------------------------


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
