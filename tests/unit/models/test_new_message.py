"""NewMessage.create: the producer's validation of every field, before any database is touched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from models import InvalidMessage, NewMessage, SMSFromAlpha, Status
from models.status import FINAL_STATUSES

CONTENT = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John"]}


def create(**fields: Any) -> NewMessage:
    return NewMessage.create(**{"recipient": "+46 70-123 45 67", "content": CONTENT, **fields})


def refused_field(**fields: Any) -> str:
    with pytest.raises(InvalidMessage) as caught:
        create(**fields)
    return caught.value.field


def test_a_message_is_normalised_and_its_row_has_only_the_given_columns() -> None:
    message = create(client_message_id="order-42")
    assert message.recipient == "46701234567"
    assert message.row() == {
        "client_message_id": "order-42",
        "recipient": "46701234567",
        "content": CONTENT,
    }
    assert next(iter(message.row()["content"])) == "$type"


def test_a_missing_client_message_id_becomes_a_fresh_uuid() -> None:
    first, second = create(), create()
    assert len(first.client_message_id) == 32
    int(first.client_message_id, 16)  # hex
    assert first.client_message_id != second.client_message_id


def test_send_at_is_the_rows_next_attempt_at() -> None:
    when = datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=1)))
    assert create(send_at=when).row()["next_attempt_at"] == datetime(2030, 1, 1, 11, tzinfo=UTC)


def test_content_objects_are_accepted_as_they_are() -> None:
    content = SMSFromAlpha(sender="Wiraya", text="hi")
    assert create(content=content).content is content


@pytest.mark.parametrize(
    "client_message_id",
    [42, b"abc", ["a"], "", "   ", "x" * 201, "line\nbreak", "tab\there", "nul\x00"],
    ids=repr,
)
def test_bad_client_message_ids_are_refused(client_message_id: object) -> None:
    assert refused_field(client_message_id=client_message_id) == "client_message_id"


def test_a_client_message_id_of_two_hundred_characters_is_accepted() -> None:
    assert create(client_message_id="x" * 200).client_message_id == "x" * 200


@pytest.mark.parametrize(
    "send_at", [datetime(2030, 1, 1), "2030-01-01T00:00:00Z", 1_900_000_000], ids=repr
)
def test_bad_send_at_is_refused(send_at: object) -> None:
    assert refused_field(send_at=send_at) == "send_at"


def test_bad_recipient_and_content_are_named() -> None:
    assert refused_field(recipient="hello") == "recipient"
    assert refused_field(content={**CONTENT, "projectId": "12"}) == "content.projectId"
    assert refused_field(content={"$type": "SMSFromAlpha", "sender": "", "text": "x"}) == (
        "content.sender"
    )


def test_statuses_match_the_contract() -> None:
    assert [status.value for status in Status] == [
        "pending",
        "sending",
        "accepted",
        "failed",
        "cancelled",
    ]
    assert set(FINAL_STATUSES) == {Status.ACCEPTED, Status.FAILED, Status.CANCELLED}
    assert [status.is_final for status in Status] == [False, False, True, True, True]
