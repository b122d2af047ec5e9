"""Rows the dispatcher refuses before sending: invalid raw-SQL rows and expired messages.

Every test drives ``Dispatcher.dispatch_once`` (or ``dispatch``) in-process (no Celery) with an
injected clock; waiting out a backoff, a lease or a Retry-After is a move of the clock. Rows are
compared with the sandbox's ledger: what Wiraya would hold.
"""

from __future__ import annotations

from sqlalchemy import text

from models import Status
from sandbox.testing import RunningSandbox
from tests.integration.dispatch.harness import (
    TRANSIENT_FOREVER,
    Outbox,
    recipient,
)
from worker.database import make_engine

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


def test_message_older_than_max_age_fails_expired_without_being_sent(pg_outbox: Outbox) -> None:
    [old] = pg_outbox.enqueue(recipient(1))
    with pg_outbox.engine.begin() as connection:  # due for two hours, never accepted
        connection.execute(
            text(
                "UPDATE outbox_messages SET created_at = created_at - interval '2 hours', "
                "next_attempt_at = next_attempt_at - interval '2 hours'"
            )
        )
    [fresh] = pg_outbox.enqueue(recipient(2))

    summary = pg_outbox.dispatcher(OUTBOX_MAX_AGE_SECONDS=3600).dispatch_once()

    assert (summary.accepted, summary.failed, summary.requests) == (1, 1, 1)
    row = pg_outbox.row(old)
    assert (row.status, row.attempts) == (Status.FAILED, 0)
    assert row.last_error == "expired: not accepted within 1:00:00 of falling due"
    assert set(pg_outbox.sandbox.ledger()) == {fresh}


def test_max_age_counts_from_the_first_due_time_not_creation(pg_outbox: Outbox) -> None:
    # Created two hours ago for a send time of now: it has not waited at all.
    [scheduled] = pg_outbox.enqueue(recipient(1))
    with pg_outbox.engine.begin() as connection:
        connection.execute(
            text("UPDATE outbox_messages SET created_at = created_at - interval '2 hours'")
        )

    summary = pg_outbox.dispatcher(OUTBOX_MAX_AGE_SECONDS=3600).dispatch_once()

    assert (summary.accepted, summary.failed) == (1, 0)
    row = pg_outbox.row(scheduled)
    assert row.status == Status.ACCEPTED and row.first_due_at == row.next_attempt_at


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
