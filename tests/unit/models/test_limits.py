"""Size limits: SMS text and placeholders per field and in total, and the message's encoded size."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from models import DEFAULT_LIMITS, InvalidMessage, MessageLimits, NewMessage

ALPHA = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "Your code is 123456"}
PROJECT = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John", "Order #5678"]}


def create(content: dict[str, Any], **fields: Any) -> NewMessage:
    return NewMessage.create(recipient="46701234567", content=content, **fields)


def refusal(content: dict[str, Any], **fields: Any) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        create(content, **fields)
    return caught.value


def encoded_size(message: NewMessage) -> int:
    row = message.row()
    return len(
        orjson.dumps(
            {
                "clientMessageId": row["client_message_id"],
                "recipient": row["recipient"],
                "content": row["content"],
            }
        )
    )


def test_the_defaults_are_documented_figures() -> None:
    assert MessageLimits() == DEFAULT_LIMITS
    assert DEFAULT_LIMITS.text_chars == 1_530  # ten GSM-7 parts of 153 characters
    assert DEFAULT_LIMITS.placeholder_chars == 500
    assert DEFAULT_LIMITS.placeholders_total_chars == 1_530
    assert DEFAULT_LIMITS.message_bytes == 8_192


def test_limits_are_frozen_and_refuse_nonsense() -> None:
    with pytest.raises(AttributeError):
        DEFAULT_LIMITS.text_chars = 5  # type: ignore[misc]
    for name in ("text_chars", "placeholder_chars", "placeholders_total_chars", "message_bytes"):
        with pytest.raises(ValueError, match=name):
            MessageLimits(**{name: 0})
        with pytest.raises(ValueError, match=name):
            MessageLimits(**{name: True})


def test_a_text_at_the_limit_is_accepted_and_one_character_more_refused() -> None:
    assert create({**ALPHA, "text": "x" * 1_530}).content.to_api()["text"] == "x" * 1_530
    problem = refusal({**ALPHA, "text": "x" * 1_531})
    assert problem.field == "content.text"
    assert problem.reason == "has 1531 characters; the limit is 1530"


def test_characters_are_counted_not_bytes() -> None:
    assert create({**ALPHA, "text": "ö" * 1_530})  # 3,060 bytes in UTF-8


def test_a_placeholder_over_its_limit_is_named_by_position() -> None:
    problem = refusal({**PROJECT, "placeholders": ["John", "x" * 501]})
    assert problem.field == "content.placeholders.1"
    assert problem.reason == "has 501 characters; the limit is 500"


def test_placeholders_over_their_total_are_refused_together() -> None:
    placeholders = ["x" * 500, "y" * 500, "z" * 500, "w" * 31]
    problem = refusal({**PROJECT, "placeholders": placeholders})
    assert problem.field == "content.placeholders"
    assert problem.reason == "have 1531 characters in all; the limit is 1530"
    assert create({**PROJECT, "placeholders": [*placeholders[:3], "w" * 30]})


@pytest.mark.parametrize("type_name", ["SMSProject", "WhatsappProject", "VoiceProject"])
def test_every_project_type_has_the_placeholder_limits(type_name: str) -> None:
    problem = refusal({**PROJECT, "$type": type_name, "placeholders": ["x" * 501]})
    assert problem.field == "content.placeholders.0"


def test_many_small_placeholders_are_refused_by_the_encoded_size() -> None:
    problem = refusal({**PROJECT, "placeholders": [""] * 3_000})
    assert problem.field == "content"
    assert "bytes of JSON; the limit is 8192" in problem.reason


def test_the_encoded_size_counts_the_whole_message_as_sent() -> None:
    message = create(PROJECT, client_message_id="order-42")
    size = encoded_size(message)
    assert create(PROJECT, client_message_id="order-42", limits=MessageLimits(message_bytes=size))
    problem = refusal(
        PROJECT, client_message_id="order-42", limits=MessageLimits(message_bytes=size - 1)
    )
    assert problem.field == "content"
    assert problem.reason == (f"the message is {size} bytes of JSON; the limit is {size - 1}")


def test_limits_given_by_the_caller_replace_the_defaults() -> None:
    roomy = MessageLimits(text_chars=5_000, message_bytes=65_536)
    assert create({**ALPHA, "text": "x" * 5_000}, limits=roomy)
    tight = MessageLimits(text_chars=10)
    assert refusal({**ALPHA, "text": "x" * 11}, limits=tight).field == "content.text"


WIDE = "\U0001f600"  # 4 bytes in UTF-8: the widest a character gets


@pytest.mark.parametrize(
    "content",
    [
        {**ALPHA, "sender": WIDE * 11, "text": WIDE * 1_530},
        {**PROJECT, "placeholders": [WIDE * 500, WIDE * 500, WIDE * 500, WIDE * 30]},
        {**PROJECT, "placeholders": ['"' * 500, "\\" * 500, "\n" * 500, '"' * 30]},  # escaped
    ],
    ids=["text", "placeholders", "escapes"],
)
def test_the_widest_message_within_the_field_limits_fits_the_default_size(
    content: dict[str, Any],
) -> None:
    # The size limit is there for what the field limits leave open (thousands of placeholders):
    # a message whose every field is at its limit fits, even in 4-byte characters.
    message = create(content, client_message_id=WIDE * 200)
    assert encoded_size(message) <= DEFAULT_LIMITS.message_bytes
