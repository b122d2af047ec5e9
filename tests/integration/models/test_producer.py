"""The producer API and plain-SQL inserts on real PostgreSQL and SQLite (each test runs on both)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import (
    DuplicateMessage,
    InvalidMessage,
    MessageLimits,
    NewMessage,
    OutboxMessage,
    Priority,
    SMSFromAlpha,
    SMSProject,
    Status,
    enqueue,
    enqueue_many,
)

CONTENT = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John", "Order #5678"]}
RAW_INSERT = text(
    "INSERT INTO outbox_messages (client_message_id, recipient, content) "
    "VALUES (:client_message_id, :recipient, :content)"
)


def count_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(text("SELECT count(*) FROM outbox_messages")) or 0)


def client_ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        query = text("SELECT client_message_id FROM outbox_messages ORDER BY id")
        return list(connection.scalars(query))


def message(index: int, **fields: Any) -> dict[str, Any]:
    content = {**CONTENT, "placeholders": ["John", f"Order #{index}"]}
    return {"recipient": "+46 70-123 45 67", "content": content, "client_message_id": f"m-{index}"}


@contextmanager
def counting_inserts(engine: Engine) -> Iterator[list[str]]:
    """Every INSERT statement sent to the database while the block runs."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def within_a_minute_of_now(value: datetime) -> bool:
    return value.tzinfo is not None and abs(datetime.now(UTC) - value) < timedelta(minutes=1)


# --- enqueue --------------------------------------------------------------------------------


def test_enqueue_inserts_a_pending_row_in_the_callers_transaction(engine: Engine) -> None:
    with Session(engine) as session:
        row = enqueue(
            session,
            recipient="+46 70-123 45 67",
            content=SMSProject(project_id=123, placeholders=["John", "Order #5678"]),
            client_message_id="order-42",
        )
        assert row.id is not None
        assert count_rows(engine) == 0  # not committed: invisible to others
        session.commit()

    with Session(engine) as session:
        stored = session.scalars(select(OutboxMessage)).one()
        assert stored.client_message_id == "order-42"
        assert stored.recipient == "46701234567"
        assert stored.content == CONTENT
        assert stored.status_enum is Status.PENDING
        assert stored.attempts == 0
        assert within_a_minute_of_now(stored.next_attempt_at)
        assert within_a_minute_of_now(stored.created_at)
        assert stored.locked_until is None
        assert stored.tracking_id is None
        assert stored.last_error is None
        assert stored.accepted_at is None


def test_enqueue_without_an_id_uses_a_fresh_uuid(engine: Engine) -> None:
    with Session(engine) as session:
        first = enqueue(session, recipient="46701234567", content=CONTENT)
        second = enqueue(session, recipient="46701234567", content=CONTENT)
        session.commit()
        assert len(first.client_message_id) == 32
        assert first.client_message_id != second.client_message_id
    assert count_rows(engine) == 2


def test_send_at_schedules_the_first_attempt(engine: Engine) -> None:
    when = datetime(2031, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=-5)))
    with Session(engine) as session:
        enqueue(session, recipient="46701234567", content=CONTENT, send_at=when)
        session.commit()
    with Session(engine) as session:
        stored = session.scalars(select(OutboxMessage.next_attempt_at)).one()
    assert stored == datetime(2031, 3, 4, 10, 6, 7, tzinfo=UTC)
    assert stored.tzinfo is not None and stored.utcoffset() == timedelta(0)


def test_content_keeps_every_field_and_next_attempt_utc_in_utc(engine: Engine) -> None:
    content = {
        "$type": "VoiceProject",
        "projectId": 9,
        "placeholders": [],
        "nextAttemptUtc": "2031-01-01T09:00:00+01:00",
    }
    with Session(engine) as session:
        enqueue(session, recipient="46701234567", content=content, client_message_id="voice")
        enqueue(
            session,
            recipient="46701234567",
            content=SMSFromAlpha(sender="Wiraya", text="Kod: 123 456 — hälsningar"),
            client_message_id="alpha",
        )
        session.commit()
    with Session(engine) as session:
        query = select(OutboxMessage.client_message_id, OutboxMessage.content)
        stored = dict(session.execute(query).all())
    assert stored["voice"] == {
        "$type": "VoiceProject",
        "projectId": 9,
        "placeholders": [],
        "nextAttemptUtc": "2031-01-01T08:00:00Z",
    }
    assert stored["alpha"] == {
        "$type": "SMSFromAlpha",
        "sender": "Wiraya",
        "text": "Kod: 123 456 — hälsningar",
    }


def test_invalid_messages_write_nothing(engine: Engine) -> None:
    with Session(engine) as session:
        with pytest.raises(InvalidMessage) as caught:
            enqueue(session, recipient="46701234567", content={**CONTENT, "projectId": "12"})
        assert caught.value.field == "content.projectId"
        with pytest.raises(InvalidMessage) as caught:
            enqueue(session, recipient="hello", content=CONTENT)
        assert caught.value.field == "recipient"
        session.commit()
    assert count_rows(engine) == 0


# --- plain SQL ------------------------------------------------------------------------------


def test_a_plain_three_column_insert_gets_every_default(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(
            RAW_INSERT,
            {
                "client_message_id": "raw-1",
                "recipient": "46701234567",
                "content": json.dumps(CONTENT),
            },
        )
        connection.commit()
    with Session(engine) as session:
        row = session.scalars(select(OutboxMessage)).one()
    assert row.id >= 1
    assert row.client_message_id == "raw-1"
    assert row.recipient == "46701234567"
    assert row.content == CONTENT
    assert row.status == "pending"
    assert row.attempts == 0
    assert within_a_minute_of_now(row.next_attempt_at)
    assert within_a_minute_of_now(row.created_at)
    assert within_a_minute_of_now(row.updated_at)
    assert row.next_attempt_at <= datetime.now(UTC)  # due at once
    assert (row.locked_until, row.tracking_id, row.last_error, row.accepted_at) == (
        None,
        None,
        None,
        None,
    )


def test_plain_sql_on_a_driver_connection_works_as_the_readme_shows(engine: Engine) -> None:
    # The driver's own connection (psycopg or sqlite3), no SQLAlchemy in between: what an
    # application in another language does.
    statements = [
        "INSERT INTO outbox_messages (client_message_id, recipient, content) "
        "VALUES ('order-42-confirmation', '46701234567', "
        """'{"$type": "SMSProject", "projectId": 123, "placeholders": ["John", "Order #5678"]}')""",
        "INSERT INTO outbox_messages (client_message_id, recipient, content) "
        """VALUES ('second', '46709876543', '{"$type": "SMSFromAlpha", """
        """"sender": "Wiraya", "text": "hi"}')""",
    ]
    driver_connection = engine.raw_connection()
    try:
        cursor = driver_connection.cursor()
        for statement in statements:
            cursor.execute(statement)
        cursor.close()
        driver_connection.commit()
    finally:
        driver_connection.close()
    assert client_ids(engine) == ["order-42-confirmation", "second"]  # ids grow in insert order
    with Session(engine) as session:
        first = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).first()
    assert first is not None
    assert (first.status, first.attempts, first.content) == ("pending", 0, CONTENT)


def test_the_table_refuses_unknown_statuses_negative_attempts_and_repeated_ids(
    engine: Engine,
) -> None:
    row = {"client_message_id": "a", "recipient": "46701234567", "content": json.dumps(CONTENT)}
    with engine.begin() as connection:
        connection.execute(RAW_INSERT, row)
    bad_statements = [
        ("UPDATE outbox_messages SET status = 'sent'", {}),
        ("UPDATE outbox_messages SET attempts = -1", {}),
        (RAW_INSERT.text, row),
        (
            "INSERT INTO outbox_messages (client_message_id, recipient) VALUES ('b', '4670')",
            {},
        ),
    ]
    for statement, parameters in bad_statements:
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text(statement), parameters)
    with engine.begin() as connection:
        # A lease and a tracking id, without which sending and accepted are refused (0010).
        connection.execute(
            text("UPDATE outbox_messages SET locked_until = updated_at, tracking_id = :t"),
            {"t": "0" * 32},
        )
        for status in Status:
            connection.execute(text("UPDATE outbox_messages SET status = :s"), {"s": status.value})
    assert count_rows(engine) == 1


# --- duplicates -----------------------------------------------------------------------------


def test_a_repeated_id_raises_and_the_transaction_stays_usable(engine: Engine) -> None:
    with Session(engine) as session:
        enqueue(session, recipient="46701234567", content=CONTENT, client_message_id="dup")
        session.commit()

    with Session(engine) as session:
        enqueue(session, recipient="46701234567", content=CONTENT, client_message_id="before")
        with pytest.raises(DuplicateMessage) as caught:
            enqueue(session, recipient="46701234567", content=CONTENT, client_message_id="dup")
        assert caught.value.client_message_ids == ["dup"]
        assert "dup" in str(caught.value)
        # Still the same, healthy transaction: on PostgreSQL a failed statement would have
        # aborted it ("current transaction is aborted").
        enqueue(session, recipient="46701234567", content=CONTENT, client_message_id="after")
        session.commit()
    assert client_ids(engine) == ["dup", "before", "after"]


def test_if_exists_return_gives_back_the_existing_row(engine: Engine) -> None:
    with Session(engine) as session:
        first = enqueue(session, recipient="46701234567", content=CONTENT, client_message_id="k")
        session.commit()
        first_id = first.id

    with Session(engine) as session:
        again = enqueue(
            session,
            recipient="+46 70-123 45 67",  # the same number, written differently
            content=SMSProject(project_id=123, placeholders=["John", "Order #5678"]),
            client_message_id="k",
            if_exists="return",
        )
        assert again.id == first_id
        assert again.content == CONTENT
        session.commit()
    assert count_rows(engine) == 1


@pytest.mark.parametrize(
    "other",
    [
        {"recipient": "46709876543", "content": CONTENT},
        {"recipient": "46701234567", "content": {**CONTENT, "placeholders": ["Jane"]}},
        {"recipient": "46701234567", "content": {**CONTENT, "$type": "WhatsappProject"}},
    ],
    ids=["recipient", "placeholders", "type"],
)
def test_if_exists_return_refuses_a_reused_id_with_other_data(
    engine: Engine, other: dict[str, Any]
) -> None:
    with Session(engine) as session:
        enqueue(session, recipient="46701234567", content=CONTENT, client_message_id="k")
        session.commit()
    with Session(engine) as session:
        with pytest.raises(DuplicateMessage, match="another recipient or content"):
            enqueue(session, client_message_id="k", if_exists="return", **other)
        enqueue(session, recipient="46701234567", content=CONTENT, client_message_id="next")
        session.commit()
    with Session(engine) as session:
        stored = session.scalars(
            select(OutboxMessage).where(OutboxMessage.client_message_id == "k")
        )
        assert stored.one().content == CONTENT  # untouched
    assert client_ids(engine) == ["k", "next"]


def test_enqueue_many_with_an_existing_id_inserts_none(engine: Engine) -> None:
    with Session(engine) as session:
        enqueue(session, **message(3))
        session.commit()
    with Session(engine) as session:
        enqueue(session, **message(100))  # earlier work in the same transaction
        with pytest.raises(DuplicateMessage) as caught:
            enqueue_many(session, [message(index) for index in range(6)])
        assert caught.value.client_message_ids == ["m-3"]
        enqueue(session, **message(101))  # the transaction is still usable
        session.commit()
    assert client_ids(engine) == ["m-3", "m-100", "m-101"]


def test_enqueue_many_if_exists_return_skips_existing_ids(engine: Engine) -> None:
    with Session(engine) as session:
        enqueue_many(session, [message(1), message(3)])
        session.commit()
    with Session(engine) as session:
        inserted = enqueue_many(session, [message(i) for i in range(5)], if_exists="return")
        session.commit()
    assert inserted == ["m-0", "m-2", "m-4"]
    assert sorted(client_ids(engine)) == ["m-0", "m-1", "m-2", "m-3", "m-4"]


def test_enqueue_many_refuses_an_id_repeated_within_the_call(engine: Engine) -> None:
    batch = [message(0), message(1), message(2), {**message(9), "client_message_id": "m-1"}]
    with Session(engine) as session, counting_inserts(engine) as inserts:
        with pytest.raises(InvalidMessage) as caught:
            enqueue_many(session, batch)
        assert caught.value.field == "messages[3].client_message_id"
        assert "m-1" in caught.value.reason
        assert inserts == []  # refused before any SQL
    assert count_rows(engine) == 0


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"recipient": "0701234567"}, "messages[2].recipient"),
        ({"content": {**CONTENT, "projectId": 0}}, "messages[2].content.projectId"),
        ({"content": {"$type": "Fax"}}, "messages[2].content.$type"),
        ({"client_message_id": ""}, "messages[2].client_message_id"),
        ({"send_at": datetime(2030, 1, 1)}, "messages[2].send_at"),
        ({"priority": 7}, "messages[2].priority"),
        ({"ttl": 60}, "messages[2].ttl"),
        ({"colour": "red"}, "messages[2]"),
    ],
    ids=lambda value: value if isinstance(value, str) else next(iter(value)),
)
def test_enqueue_many_names_the_bad_message_and_inserts_none(
    engine: Engine, bad: dict[str, Any], field: str
) -> None:
    batch: list[Any] = [message(0), message(1), {**message(2), **bad}, message(3)]
    with Session(engine) as session:
        with pytest.raises(InvalidMessage) as caught:
            enqueue_many(session, batch)
        session.commit()
    assert caught.value.field == field
    assert count_rows(engine) == 0


def test_enqueue_many_refuses_items_that_are_not_messages(engine: Engine) -> None:
    with Session(engine) as session, pytest.raises(InvalidMessage) as caught:
        enqueue_many(session, [message(0), "46701234567"])  # type: ignore[list-item]
    assert caught.value.field == "messages[1]"


def test_enqueue_many_of_nothing_sends_nothing(engine: Engine) -> None:
    with Session(engine) as session, counting_inserts(engine) as inserts:
        assert enqueue_many(session, []) == []
    assert inserts == []


def test_enqueue_many_accepts_new_messages_and_mappings_alike(engine: Engine) -> None:
    batch: list[Any] = [NewMessage.create(**message(0)), message(1)]
    with Session(engine) as session:
        assert enqueue_many(session, batch) == ["m-0", "m-1"]
        session.commit()
    assert client_ids(engine) == ["m-0", "m-1"]


@pytest.mark.parametrize("scheduled", [[0], [2], [0, 2], [0, 1, 2]], ids=str)
def test_enqueue_many_keeps_each_send_at_whatever_its_place(
    engine: Engine, scheduled: list[int]
) -> None:
    # A multi-row VALUES takes its columns from its first row; a send_at on a later row
    # must not be dropped, nor one on the first row break the rows without one.
    later = datetime.now(UTC) + timedelta(hours=1)
    batch = [
        {**message(index), "send_at": later} if index in scheduled else message(index)
        for index in range(3)
    ]
    with Session(engine) as session:
        enqueue_many(session, batch)
        session.commit()
    with Session(engine) as session:
        query = select(OutboxMessage.client_message_id, OutboxMessage.next_attempt_at)
        due = dict(session.execute(query).all())
    for index in range(3):
        when = due[f"m-{index}"]
        if index in scheduled:
            assert abs(when - later) < timedelta(milliseconds=1), (index, when)
        else:
            assert within_a_minute_of_now(when), (index, when)


# --- volume ---------------------------------------------------------------------------------


def test_ten_thousand_messages_go_in_a_few_multi_row_inserts(
    engine: Engine, request: pytest.FixtureRequest
) -> None:
    batch = [NewMessage.create(**message(index)) for index in range(10_000)]
    with Session(engine) as session, counting_inserts(engine) as inserts:
        started = time.perf_counter()
        inserted = enqueue_many(session, batch)
        session.commit()
        elapsed = time.perf_counter() - started
    assert len(inserts) <= 10, f"{len(inserts)} INSERT statements for 10,000 rows"
    assert inserted == [f"m-{index}" for index in range(10_000)]
    assert count_rows(engine) == 10_000
    with engine.connect() as connection:
        pending = connection.scalar(
            select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == "pending")
        )
    assert pending == 10_000
    rate = f"{10_000 / elapsed:,.0f} rows/s ({elapsed:.2f} s, {len(inserts)} INSERTs)"
    request.node.user_properties.append(("enqueue_many_10000", rate))
    print(f"\nenqueue_many 10,000 rows on {engine.dialect.name}: {rate}")


# --- rollback -------------------------------------------------------------------------------


def test_a_rolled_back_transaction_leaves_no_row(engine: Engine) -> None:
    with Session(engine) as session:
        enqueue(session, recipient="46701234567", content=CONTENT, client_message_id="a")
        enqueue_many(session, [message(index) for index in range(50)])
        session.rollback()
    assert count_rows(engine) == 0


def test_an_exception_in_the_callers_block_leaves_no_row(engine: Engine) -> None:
    class BusinessError(Exception):
        pass

    with pytest.raises(BusinessError), Session(engine) as session, session.begin():
        enqueue(session, recipient="46701234567", content=CONTENT, client_message_id="a")
        enqueue_many(session, [message(index) for index in range(3)])
        raise BusinessError
    assert count_rows(engine) == 0


def own_engine(engine: Engine) -> Engine:
    """An engine as an application creates it: none of the outbox's own configuration."""
    return create_engine(engine.url.render_as_string(hide_password=False))


def test_enqueue_as_the_first_write_is_rolled_back_with_the_callers_transaction(
    engine: Engine,
) -> None:
    application = own_engine(engine)
    try:
        with Session(application) as session:
            enqueue(session, **message(0))
            session.rollback()
        with Session(application) as session, session.begin():
            enqueue(session, **message(1))
    finally:
        application.dispose()
    assert client_ids(engine) == ["m-1"]


@pytest.mark.parametrize("if_exists", ["raise", "return"])
def test_enqueue_many_as_the_first_write_is_rolled_back_with_the_callers_transaction(
    engine: Engine, if_exists: Any
) -> None:
    # On SQLite, pysqlite opens no transaction before a SAVEPOINT: enqueue_many's savepoint
    # became the outer transaction and its RELEASE committed the rows.
    application = own_engine(engine)
    try:
        with Session(application) as session:
            session.execute(text("SELECT count(*) FROM outbox_messages"))  # a read first
            enqueue_many(session, [message(index) for index in range(3)], if_exists=if_exists)
            session.rollback()
        assert count_rows(engine) == 0
        with Session(application) as session, session.begin():
            enqueue_many(session, [message(index) for index in range(3)], if_exists=if_exists)
    finally:
        application.dispose()
    assert client_ids(engine) == ["m-0", "m-1", "m-2"]


# --- control characters and sizes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"content": {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "a\x00b"}},
        {"content": {**CONTENT, "placeholders": ["a\x00b"]}},
        {"client_message_id": "a\x00b"},
        {"recipient": "4670\x001234567"},
    ],
    ids=["text", "placeholder", "client_message_id", "recipient"],
)
def test_a_nul_character_is_refused_and_the_transaction_stays_usable(
    engine: Engine, bad: dict[str, Any]
) -> None:
    # PostgreSQL cannot store NUL in text or jsonb: it used to raise a DataError that left
    # the caller's transaction aborted. SQLite stored it and sent it.
    with Session(engine) as session:
        enqueue(session, **message(0))
        with pytest.raises(InvalidMessage) as caught:
            enqueue(session, **{**message(1), **bad})
        assert "control character" in caught.value.reason
        with pytest.raises(InvalidMessage):
            enqueue_many(session, [message(2), {**message(3), **bad}])
        assert session.execute(text("SELECT 1")).scalar() == 1  # not aborted
        enqueue(session, **message(4))
        session.commit()
    assert client_ids(engine) == ["m-0", "m-4"]


def test_an_oversized_message_is_refused_before_anything_is_written(engine: Engine) -> None:
    huge = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "x" * 2_000}
    with Session(engine) as session, counting_inserts(engine) as inserts:
        with pytest.raises(InvalidMessage) as caught:
            enqueue(session, recipient="46701234567", content=huge)
        assert caught.value.field == "content.text"
        with pytest.raises(InvalidMessage) as caught:
            enqueue_many(session, [message(0), {**message(1), "content": huge}])
        assert caught.value.field == "messages[1].content.text"
        assert inserts == []
    roomy = MessageLimits(text_chars=2_000)
    with Session(engine) as session, session.begin():
        enqueue(session, recipient="46701234567", content=huge, limits=roomy)
        enqueue_many(session, [{**message(1), "content": huge}], limits=roomy)
    assert count_rows(engine) == 2


# --- priorities and lifetimes -------------------------------------------------------------------


def stored_lanes(engine: Engine) -> dict[str, tuple[int, datetime | None]]:
    with Session(engine) as session:
        query = select(
            OutboxMessage.client_message_id, OutboxMessage.priority, OutboxMessage.expires_at
        )
        return {cid: (priority, expires) for cid, priority, expires in session.execute(query)}


def test_enqueue_stores_the_priority_and_the_expiry(engine: Engine) -> None:
    expires = datetime.now(UTC) + timedelta(minutes=10)
    with Session(engine) as session, session.begin():
        enqueue(session, **message(0), priority=Priority.URGENT, ttl=timedelta(minutes=10))
        enqueue(session, **message(1), priority=2, expires_at=expires)
        enqueue(session, **message(2))
    lanes = stored_lanes(engine)
    assert lanes["m-0"][0] == 0
    assert lanes["m-0"][1] is not None
    assert abs(lanes["m-0"][1] - expires) < timedelta(seconds=30)
    assert lanes["m-1"][0] == 2
    assert abs(lanes["m-1"][1] - expires) < timedelta(milliseconds=1)  # type: ignore[operator]
    assert lanes["m-2"] == (1, None)


def test_enqueue_many_keeps_each_messages_priority_and_expiry(engine: Engine) -> None:
    expires = datetime.now(UTC) + timedelta(hours=1)
    batch = [
        {**message(0), "priority": Priority.BULK},
        {**message(1), "priority": Priority.URGENT, "expires_at": expires},
        message(2),
        {**message(3), "send_at": expires - timedelta(minutes=30), "ttl": timedelta(minutes=5)},
    ]
    with Session(engine) as session, session.begin():
        enqueue_many(session, batch)
    lanes = stored_lanes(engine)
    assert {cid: priority for cid, (priority, _) in lanes.items()} == {
        "m-0": 2,
        "m-1": 0,
        "m-2": 1,
        "m-3": 1,
    }
    assert lanes["m-0"][1] is None and lanes["m-2"][1] is None
    assert abs(lanes["m-1"][1] - expires) < timedelta(milliseconds=1)  # type: ignore[operator]
    assert abs(lanes["m-3"][1] - (expires - timedelta(minutes=25))) < timedelta(milliseconds=1)  # type: ignore[operator]


def test_a_bad_priority_or_expiry_writes_nothing(engine: Engine) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    with Session(engine) as session:
        with pytest.raises(InvalidMessage) as caught:
            enqueue(session, **message(0), priority=5)
        assert caught.value.field == "priority"
        with pytest.raises(InvalidMessage) as caught:
            enqueue(session, **message(0), expires_at=past)
        assert caught.value.field == "expires_at"
        session.commit()
    assert count_rows(engine) == 0


def test_plain_sql_sets_priority_and_expiry_as_the_readme_shows(engine: Engine) -> None:
    in_ten_minutes = {
        "postgresql": "now() + interval '10 minutes'",
        "sqlite": "datetime('now', '+10 minutes')",
    }[engine.dialect.name]
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox_messages "
                "(client_message_id, recipient, content, priority, expires_at) "
                f"VALUES ('code-1', '46701234567', :content, 0, {in_ten_minutes})"
            ),
            {"content": json.dumps(CONTENT)},
        )
    priority, expires = stored_lanes(engine)["code-1"]
    assert priority == 0
    assert expires is not None
    assert abs(expires - (datetime.now(UTC) + timedelta(minutes=10))) < timedelta(minutes=1)
