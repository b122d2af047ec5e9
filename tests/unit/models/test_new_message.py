"""NewMessage.create: the producer's validation of every field, before any database is touched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from models import InvalidMessage, NewMessage, Priority, SMSFromAlpha, Status
from models.status import FINAL_STATUSES

CONTENT = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John"]}


def create(**fields: Any) -> NewMessage:
    return NewMessage.create(**{"recipient": "+46 70-123 45 67", "content": CONTENT, **fields})


def refused_field(**fields: Any) -> str:
    with pytest.raises(InvalidMessage) as caught:
        create(**fields)
    return caught.value.field


def test_a_message_is_normalised_and_its_row_leaves_the_due_time_to_the_database() -> None:
    message = create(client_message_id="order-42")
    assert message.recipient == "46701234567"
    assert message.row() == {
        "client_message_id": "order-42",
        "recipient": "46701234567",
        "content": CONTENT,
        "priority": 1,
        "expires_at": None,
        "segments": None,  # a template's text is Wiraya's: no count
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


# --- priority ---------------------------------------------------------------------------------


def test_the_default_priority_is_normal() -> None:
    assert create().priority is Priority.NORMAL


@pytest.mark.parametrize(
    ("given", "stored"),
    [(Priority.URGENT, 0), (Priority.NORMAL, 1), (Priority.BULK, 2), (0, 0), (1, 1), (2, 2)],
    ids=repr,
)
def test_priorities_and_their_numbers_are_accepted(given: object, stored: int) -> None:
    message = create(priority=given)
    assert message.priority is Priority(stored)
    assert message.row()["priority"] == stored


@pytest.mark.parametrize("priority", [3, -1, True, False, 1.0, "urgent", "0", None], ids=repr)
def test_other_priorities_are_refused_clearly(priority: object) -> None:
    with pytest.raises(InvalidMessage) as caught:
        create(priority=priority)
    assert caught.value.field == "priority"
    assert caught.value.reason.startswith("must be Priority.URGENT, NORMAL or BULK (0-2), got ")


# --- expiry -----------------------------------------------------------------------------------


def test_no_expiry_by_default() -> None:
    assert create().expires_at is None
    assert create().row()["expires_at"] is None


def test_expires_at_is_kept_in_utc() -> None:
    when = datetime.now(timezone(timedelta(hours=2))) + timedelta(minutes=10)
    message = create(expires_at=when)
    assert message.expires_at == when
    assert message.row()["expires_at"].utcoffset() == timedelta(0)


def test_a_ttl_counts_from_now() -> None:
    before = datetime.now(UTC)
    message = create(ttl=timedelta(minutes=10))
    after = datetime.now(UTC)
    assert message.expires_at is not None
    assert before + timedelta(minutes=10) <= message.expires_at <= after + timedelta(minutes=10)


def test_a_ttl_counts_from_send_at_when_scheduled() -> None:
    send_at = datetime(2031, 1, 1, 9, tzinfo=UTC)
    message = create(send_at=send_at, ttl=timedelta(hours=1))
    assert message.expires_at == datetime(2031, 1, 1, 10, tzinfo=UTC)


def test_a_ttl_of_a_message_due_in_the_past_counts_from_now() -> None:
    send_at = datetime.now(UTC) - timedelta(hours=2)
    message = create(send_at=send_at, ttl=timedelta(hours=1))
    assert message.expires_at is not None
    assert message.expires_at > datetime.now(UTC) + timedelta(minutes=59)


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"expires_at": datetime(2031, 1, 1)}, "expires_at", "timezone-aware"),
        ({"expires_at": "2031-01-01T00:00:00Z"}, "expires_at", "must be a datetime"),
        ({"expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, "expires_at", "must be after now"),
        (
            {
                "send_at": datetime(2031, 1, 1, 9, tzinfo=UTC),
                "expires_at": datetime(2031, 1, 1, 9, tzinfo=UTC),
            },
            "expires_at",
            "must be after send_at (2031-01-01T09:00:00+00:00)",
        ),
        (
            {
                "send_at": datetime(2031, 1, 1, 9, tzinfo=UTC),
                "expires_at": datetime(2031, 1, 1, 8, tzinfo=UTC),
            },
            "expires_at",
            "must be after send_at",
        ),
        ({"ttl": timedelta(0)}, "ttl", "must be positive"),
        ({"ttl": timedelta(seconds=-5)}, "ttl", "must be positive"),
        ({"ttl": 600}, "ttl", "must be a timedelta"),
        (
            {"ttl": timedelta(minutes=5), "expires_at": datetime(2031, 1, 1, tzinfo=UTC)},
            "ttl",
            "give expires_at or ttl, not both",
        ),
    ],
    ids=[
        "naive",
        "text",
        "past",
        "equal-to-send-at",
        "before-send-at",
        "zero-ttl",
        "negative-ttl",
        "ttl-number",
        "both",
    ],
)
def test_bad_lifetimes_are_refused_clearly(fields: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        create(**fields)
    assert caught.value.field == field
    assert reason in caught.value.reason


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
