"""Rows as the databases hand them back, screened: what the dispatcher sees of raw-SQL inserts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from models import (
    InvalidMessage,
    StoredMessage,
    decode_stored_content,
    enqueue,
    screen_stored,
)
from worker.database import make_engine

CONTENT = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John", "Order #5678"]}


def insert_raw(engine: Engine, client_message_id: str, recipient: str, content: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox_messages (client_message_id, recipient, content) "
                "VALUES (:cid, :recipient, :content)"
            ),
            {"cid": client_message_id, "recipient": recipient, "content": content},
        )


def read_back(engine: Engine) -> dict[str, tuple[str, Any]]:
    """Each row's recipient and content as a claim reads the column: PostgreSQL's jsonb as
    text; SQLite's column as bytes, which any value stored there can be read as (text that
    is not UTF-8 cannot be read as text at all)."""
    as_read = (
        "CAST(content AS TEXT)" if engine.dialect.name == "postgresql" else "CAST(content AS BLOB)"
    )
    with engine.connect() as connection:
        query = text(f"SELECT client_message_id, recipient, {as_read} FROM outbox_messages")
        return {cid: (recipient, content) for cid, recipient, content in connection.execute(query)}


def screened(row: tuple[str, Any], client_message_id: str) -> StoredMessage:
    recipient, content = row
    return screen_stored(client_message_id, recipient, decode_stored_content(content))


def test_a_producer_row_reads_back_as_it_was_sent(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        enqueue(session, recipient="+46 70-123 45 67", content=CONTENT, client_message_id="p-1")
    result = screened(read_back(engine)["p-1"], "p-1")
    assert result == StoredMessage("p-1", "46701234567", CONTENT)
    assert list(result.content) == ["$type", "projectId", "placeholders"]  # whatever jsonb did


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (json.dumps({**CONTENT, "placeholders": ["a\x01b"]}), "content.placeholders.0"),
        (json.dumps({"$type": "SMSFromAlpha", "sender": "W", "text": "x" * 2_000}), "content.text"),
        (json.dumps({**CONTENT, "projectId": 10**30}), "content.projectId"),
        ("[" * 3_000 + "]" * 3_000, "content"),
        (json.dumps({**CONTENT, "placeholders": [{"a": {"b": ["c"]}}]}), "content.placeholders.0"),
    ],
    ids=["control", "too-long", "huge-number", "deep", "nested"],
)
def test_raw_rows_the_producer_would_refuse_fail_by_name(
    engine: Engine, content: str, field: str
) -> None:
    insert_raw(engine, "raw-1", "46701234567", content)
    with pytest.raises(InvalidMessage) as caught:
        screened(read_back(engine)["raw-1"], "raw-1")
    assert caught.value.field == field
    assert str(caught.value).isprintable()


@pytest.mark.parametrize(
    ("client_message_id", "recipient", "field"),
    [
        ("", "46701234567", "client_message_id"),
        ("x" * 201, "46701234567", "client_message_id"),
        ("tab\there", "46701234567", "client_message_id"),
        ("ok", "+46 (0)70 123 45 67 ext. 5", "recipient"),
    ],
    ids=["empty", "too-long", "control", "recipient"],
)
def test_raw_ids_and_recipients_are_screened(
    engine: Engine, client_message_id: str, recipient: str, field: str
) -> None:
    insert_raw(engine, client_message_id, recipient, json.dumps(CONTENT))
    with pytest.raises(InvalidMessage) as caught:
        screened(read_back(engine)[client_message_id], client_message_id)
    assert caught.value.field == field


def test_sqlite_text_that_is_not_utf8_fails_alone(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO outbox_messages (client_message_id, recipient, content) "
                    "VALUES ('blob', '46701234567', X'FFFE7B7D')"
                )
            )
        with pytest.raises(InvalidMessage, match="is not JSON"):
            screened(read_back(engine)["blob"], "blob")
    finally:
        engine.dispose()
