"""Rows no producer checked: whatever the database hands back, a bad row fails alone.

Inserted by plain SQL, as any language can: nested thousands of levels deep, bytes that are
not UTF-8 (SQLite keeps what it is given), identifiers that are empty, huge or hold control
characters, a message larger than the API takes. Each fails with its reason; its batch-mates
are sent; nothing is left `sending`.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from models import Status
from sandbox.faults import Faults
from sandbox.testing import RunningSandbox
from tests.integration.dispatch.harness import ALPHA, Outbox, recipient


def deep(levels: int) -> str:
    """A content document whose placeholders hide ``levels`` nested lists (as JSON text)."""
    nested = "[" * levels + '"x"' + "]" * levels
    return f'{{"$type": "SMSProject", "projectId": 1, "placeholders": {nested}}}'


def insert_text(outbox: Outbox, client_message_id: str, to: str, document: str) -> None:
    """A plain INSERT of a content document given as JSON text."""
    cast = "CAST(:content AS jsonb)" if outbox.engine.dialect.name == "postgresql" else ":content"
    with outbox.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox_messages (client_message_id, recipient, content) "
                f"VALUES (:id, :to, {cast})"
            ),
            {"id": client_message_id, "to": to, "content": document},
        )


def assert_only_bad_rows_failed(outbox: Outbox, good: list[str], bad: dict[str, str]) -> None:
    with outbox.engine.connect() as connection:  # not the content: it may not even parse
        rows = {
            row.client_message_id: row
            for row in connection.execute(
                text("SELECT client_message_id, status, attempts, last_error FROM outbox_messages")
            )
        }
    assert {rows[cmid].status for cmid in good} == {Status.ACCEPTED}
    for cmid, reason in bad.items():
        row = rows[cmid]
        assert row.status == Status.FAILED, (cmid, row.last_error)
        assert row.last_error is not None and reason in row.last_error, (cmid, row.last_error)
        assert row.attempts == 0  # never sent
    assert not [row for row in rows.values() if row.status == Status.SENDING]
    assert set(outbox.sandbox.ledger()) == set(good)


def test_a_row_nested_thousands_of_levels_deep_fails_alone(outbox: Outbox) -> None:
    good = outbox.enqueue_ordinary(2)
    insert_text(outbox, "deep", recipient(900), deep(3_000))
    good += outbox.enqueue_ordinary(2)

    summary = outbox.dispatcher().dispatch_once()

    assert (summary.claimed, summary.accepted, summary.failed) == (5, 4, 1)
    assert_only_bad_rows_failed(outbox, good, {"deep": "invalid: "})


BAD_IDS = {"": "client_message_id", "x" * 201: "client_message_id", "a\tb": "control"}


def test_raw_client_message_ids_are_screened(outbox: Outbox) -> None:
    good = outbox.enqueue_ordinary(2)
    for number, cmid in enumerate(BAD_IDS):
        outbox.insert_raw(cmid, recipient(910 + number), ALPHA)

    summary = outbox.dispatcher().dispatch_once()

    assert (summary.accepted, summary.failed) == (2, 3)
    rows = {row.client_message_id: row for row in outbox.rows().values()}
    for cmid, words in BAD_IDS.items():
        assert rows[cmid].status == Status.FAILED
        assert rows[cmid].last_error is not None
        assert rows[cmid].last_error.startswith("invalid: client_message_id")
        assert words.split()[0] in rows[cmid].last_error
    assert set(outbox.sandbox.ledger()) == set(good)


@pytest.mark.parametrize("column", ["content", "recipient", "client_message_id"])
def test_bytes_that_are_not_utf8_fail_alone_on_sqlite(
    sqlite_url: str, sandbox: RunningSandbox, column: str
) -> None:
    from worker.database import make_engine

    engine = make_engine(sqlite_url)
    outbox = Outbox(engine, sandbox)
    try:
        good = outbox.enqueue_ordinary(2)
        values = {
            "client_message_id": "'blob-row'",
            "recipient": f"'{recipient(920)}'",
            "content": f"'{json.dumps(ALPHA)}'",
        }
        values[column] = "X'C328FFFE'"  # not UTF-8 at all
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO outbox_messages (client_message_id, recipient, content) "
                    f"VALUES ({values['client_message_id']}, {values['recipient']}, "
                    f"{values['content']})"
                )
            )
        good += outbox.enqueue_ordinary(2)

        summary = outbox.dispatcher().dispatch_once()

        assert (summary.claimed, summary.accepted, summary.failed) == (5, 4, 1)
        with engine.connect() as connection:
            status, error = connection.execute(
                text("SELECT status, last_error FROM outbox_messages WHERE id = 3")
            ).one()
        assert status == Status.FAILED
        assert error.startswith(f"invalid: {column}: is not ") and "UTF-8" in error
        assert set(sandbox.ledger()) == set(good)
    finally:
        outbox.close()
        engine.dispose()


def test_a_message_too_large_for_the_api_fails_alone_and_batches_keep_their_size(
    outbox: Outbox,
) -> None:
    dispatcher = outbox.dispatcher(OUTBOX_BATCH_SIZE=4)
    outbox.enqueue_ordinary(4)
    assert dispatcher.dispatch_once().accepted == 4  # the API takes batches of 4
    # A proxy in front refuses bodies over 1,200 bytes: four ordinary messages fit, one long
    # text (within the outbox's own limits) alone does not.
    outbox.sandbox.set_faults(Faults(max_body_bytes=1_200))
    good = outbox.enqueue_ordinary(3)
    outbox.insert_raw(
        "long", recipient(930), {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "x" * 1_500}
    )

    summary = dispatcher.dispatch_once()

    assert (summary.claimed, summary.accepted, summary.failed) == (4, 3, 1)
    long = outbox.row("long")
    assert long.status == Status.FAILED
    assert long.last_error is not None and long.last_error.startswith("rejected: too large: ")
    assert long.attempts == 1
    assert set(outbox.sandbox.ledger()) - {"long"} >= set(good)
    assert outbox.gate().batch_limit in (None, 4)  # never below what the API took
    outbox.enqueue_ordinary(4)
    outbox.clock.catch_up()
    assert dispatcher.dispatch_once().claimed == 4


def test_a_raw_message_over_the_outboxs_own_limits_fails_unsent(outbox: Outbox) -> None:
    good = outbox.enqueue_ordinary(2)
    outbox.insert_raw(
        "huge", recipient(931), {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "x" * 20_000}
    )

    summary = outbox.dispatcher().dispatch_once()

    assert (summary.accepted, summary.failed, summary.requests) == (2, 1, 1)
    huge = outbox.row("huge")
    assert (huge.status, huge.attempts) == (Status.FAILED, 0)
    assert huge.last_error is not None and huge.last_error.startswith("invalid: content")
    assert set(outbox.sandbox.ledger()) == set(good)


def test_a_raw_row_holding_nul_fails_alone_on_sqlite(
    sqlite_url: str, sandbox: RunningSandbox
) -> None:
    # PostgreSQL's jsonb refuses \u0000 itself; SQLite stores it, and the API must never see it.
    from worker.database import make_engine

    engine = make_engine(sqlite_url)
    outbox = Outbox(engine, sandbox)
    try:
        good = outbox.enqueue_ordinary(2)
        outbox.insert_raw(
            "nul", recipient(940), {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "a\x00b"}
        )

        summary = outbox.dispatcher().dispatch_once()

        assert (summary.accepted, summary.failed) == (2, 1)
        row = outbox.row("nul")
        assert row.status == Status.FAILED and row.last_error is not None
        assert row.last_error.startswith("invalid: content.text")
        assert set(sandbox.ledger()) == set(good)
    finally:
        outbox.close()
        engine.dispose()


def test_a_suspicion_that_is_not_a_count_fails_alone(outbox: Outbox) -> None:
    good = outbox.enqueue_ordinary(2)
    outbox.insert_raw("negative", recipient(930), ALPHA)
    outbox.insert_raw("not-a-number", recipient(931), ALPHA)
    good += outbox.enqueue_ordinary(2)
    sqlite = outbox.engine.dialect.name == "sqlite"
    # SQLite keeps text in an integer column; PostgreSQL takes a negative count only.
    values = {"negative": -1, "not-a-number": "many" if sqlite else -1}
    with outbox.engine.begin() as connection:
        for client_message_id, value in values.items():
            connection.execute(
                text("UPDATE outbox_messages SET suspicion = :value WHERE client_message_id = :id"),
                {"value": value, "id": client_message_id},
            )

    outbox.dispatcher().dispatch_once()

    wrong_type = "must be a whole number, not str" if sqlite else "must be at least 0, not -1"
    bad = {
        "negative": "invalid: suspicion: must be at least 0, not -1",
        "not-a-number": f"invalid: suspicion: {wrong_type}",
    }
    assert_only_bad_rows_failed(outbox, good, bad)


HOSTILE_TENANTS = {
    "hostile-tab": "a\tb",
    "hostile-comma": "shop,other=key",
    "hostile-long": "x" * 65,
}


def test_a_raw_tenant_no_producer_would_write_fails_alone(outbox: Outbox) -> None:
    good = outbox.enqueue_ordinary(2)
    for number, (cmid, tenant) in enumerate(HOSTILE_TENANTS.items()):
        outbox.insert_raw(cmid, recipient(930 + number), ALPHA)
        with outbox.engine.begin() as connection:
            connection.execute(
                text("UPDATE outbox_messages SET tenant = :tenant WHERE client_message_id = :id"),
                {"tenant": tenant, "id": cmid},
            )

    dispatcher = outbox.dispatcher()
    summaries = [dispatcher.dispatch_once() for _ in range(5)]  # a batch holds one tenant's rows

    assert sum(summary.accepted for summary in summaries) == 2
    assert sum(summary.failed for summary in summaries) == 3
    assert_only_bad_rows_failed(outbox, good, dict.fromkeys(HOSTILE_TENANTS, "invalid: tenant"))
