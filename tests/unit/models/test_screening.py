"""Screening a stored row: what the dispatcher sends, or InvalidMessage naming the field."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import (
    DEFAULT_LIMITS,
    InvalidMessage,
    MessageLimits,
    NewMessage,
    StoredMessage,
    decode_stored_content,
    screen_stored,
)

ALPHA = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "Your code is 123456"}
PROJECT = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John", "Order #5678"]}


def refusal(
    client_message_id: object = "m-1", recipient: object = "46701234567", content: object = PROJECT
) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        screen_stored(client_message_id, recipient, content)
    assert_storable(caught.value)
    return caught.value


def assert_storable(problem: InvalidMessage) -> None:
    """What the dispatcher writes into last_error: short, printable, valid Unicode."""
    text = str(problem)
    assert text.isprintable(), repr(text)
    assert len(text) <= 400, len(text)
    text.encode("utf-8")


def nested(depth: int, leaf: object = "x", *, as_list: bool = False) -> object:
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


# --- accepted -------------------------------------------------------------------------------


def test_a_stored_row_comes_back_in_canonical_form() -> None:
    stored = {"placeholders": ["John"], "projectId": 7, "$type": "SMSProject"}  # jsonb's order
    screened = screen_stored("order-42", "46701234567", stored)
    assert screened == StoredMessage(
        "order-42", "46701234567", {"$type": "SMSProject", "projectId": 7, "placeholders": ["John"]}
    )
    assert next(iter(screened.content)) == "$type"
    client_message_id, recipient, content = screened  # unpacks like a tuple
    assert (client_message_id, recipient, content) == tuple(screened)


def test_raw_sql_spellings_are_normalised_as_the_producer_would() -> None:
    screened = screen_stored(
        "raw", "+46 (0)70-123 45 67", {**PROJECT, "nextAttemptUtc": "2031-01-01T09:00:00+01:00"}
    )
    assert screened.recipient == "46701234567"
    assert screened.content["nextAttemptUtc"] == "2031-01-01T08:00:00Z"


@pytest.mark.parametrize("content", [PROJECT, ALPHA], ids=["project", "alpha"])
def test_whatever_the_producer_stores_passes_the_screen_unchanged(content: dict[str, Any]) -> None:
    row = NewMessage.create(recipient="+46 70 123 45 67", content=content).row()
    screened = screen_stored(row["client_message_id"], row["recipient"], row["content"])
    assert screened.content == row["content"]
    assert screened.recipient == row["recipient"]


# --- client_message_id ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_message_id", "reason"),
    [
        ("", "1-200 characters"),
        ("   ", "not blank"),
        ("x" * 201, "1-200 characters"),
        ("x" * 1_000_000, "1-200 characters"),
        ("a\x00b", "control character"),
        ("a\x1fb", "control character"),
        ("a\tb", "control character"),
        ("a\x7fb", "control character"),
        ("a\ud800", "not valid Unicode"),
        (None, "must be a string"),
        (42, "must be a string"),
    ],
    ids=repr,
)
def test_bad_client_message_ids_fail_by_name(client_message_id: object, reason: str) -> None:
    problem = refusal(client_message_id=client_message_id)
    assert problem.field == "client_message_id"
    assert reason in problem.reason


# --- recipient ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "recipient", ["hello", "0701234567", "4670\x00123456", "4" * 5_000_000, None, 46701234567]
)
def test_bad_recipients_fail_by_name(recipient: object) -> None:
    assert refusal(recipient=recipient).field == "recipient"


# --- content --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "field", "reason"),
    [
        ([PROJECT], "content", "must be an object with $type, got a list"),
        ("not json", "content", "must be an object with $type, got a string"),
        (None, "content", "must be an object with $type, got null"),
        (42, "content", "must be an object with $type, got a number"),
        ({**ALPHA, "text": "a\x00b"}, "content.text", "control character"),
        ({**PROJECT, "placeholders": ["a\x1bb"]}, "content.placeholders.0", "control character"),
        ({**ALPHA, "text": "x" * 1_531}, "content.text", "the limit is 1530"),
        ({**PROJECT, "placeholders": ["x" * 501]}, "content.placeholders.0", "the limit is 500"),
        ({**PROJECT, "placeholders": [""] * 3_000}, "content", "the limit is 8192"),
        ({**ALPHA, "text": "x" * 10_000_000}, "content", "the limit is 8192"),
        ({**PROJECT, "projectId": math.nan}, "content.projectId", "integer"),
        ({**PROJECT, "projectId": math.inf}, "content.projectId", "integer"),
        ({**PROJECT, "projectId": 2**70}, "content", "beyond 64 bits"),
        ({**PROJECT, "projectId": 10**5_000}, "content", "beyond 64 bits"),
        ({**PROJECT, "projectId": 2**40}, "content.projectId", "2147483647"),
        ({**PROJECT, 1: "a"}, "content", "field names must be strings"),
        ({**PROJECT, ("a",): "a"}, "content", "field names must be strings"),
        ({**PROJECT, "placeholders": {"a": "b"}}, "content.placeholders", "list"),
        ({**PROJECT, "placeholders": [{"a": "b"}]}, "content.placeholders.0", "string"),
        ({"$type": ["SMSProject"]}, "content.$type", "is not one of"),
        ({"$type": {"a": 1}}, "content.$type", "is not one of"),
        ({**PROJECT, "x" * 1_000: 1}, "content", "is not a field of SMSProject"),
        ({**PROJECT, "placeholders": ["a", b"bytes"]}, "content", "bytes"),
        ({**PROJECT, "placeholders": {"a", "b"}}, "content", "set"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 40 else None,
)
def test_bad_content_fails_by_name(content: object, field: str, reason: str) -> None:
    problem = refusal(content=content)
    assert problem.field == field
    assert reason in problem.reason


@pytest.mark.parametrize("as_list", [False, True], ids=["objects", "lists"])
@pytest.mark.parametrize("depth", [300, 3_000, 100_000])
def test_content_nested_thousands_deep_fails_alone(depth: int, as_list: bool) -> None:
    content = {**PROJECT, "placeholders": [nested(depth, as_list=as_list)]}
    problem = refusal(content=content)
    assert problem.field == "content"
    assert "nested too deeply" in problem.reason
    assert refusal(content=nested(depth, as_list=as_list)).field == "content"


def test_the_dispatchers_limits_apply() -> None:
    roomy = MessageLimits(text_chars=5_000, message_bytes=65_536)
    content = {**ALPHA, "text": "x" * 5_000}
    assert screen_stored("m", "46701234567", content, roomy).content["text"] == "x" * 5_000
    with pytest.raises(InvalidMessage):
        screen_stored("m", "46701234567", content, DEFAULT_LIMITS)


# --- decoding the column's text ---------------------------------------------------------------


def test_the_columns_text_decodes_to_its_value() -> None:
    assert decode_stored_content(json.dumps(PROJECT)) == PROJECT
    assert decode_stored_content(json.dumps(PROJECT).encode()) == PROJECT


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "is not JSON"),
        ('{"a": NaN}', "is not JSON"),
        (b"\xff\xfe{}", "is not JSON"),  # a SQLite BLOB that is not UTF-8
        ("[" * 3_000 + "]" * 3_000, "nested too deeply"),
        ('{"a": "' + "x" * 10_000_000 + '"}', "far over the limit of 8192 bytes"),
        (None, "is missing"),
        (42, "must be JSON text"),
    ],
    ids=["text", "nan", "blob", "deep", "huge", "null", "number"],
)
def test_undecodable_text_fails_by_name(text: object, reason: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_stored_content(text)
    assert caught.value.field == "content"
    assert reason in caught.value.reason
    assert_storable(caught.value)


# --- whatever the input -----------------------------------------------------------------------

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**200)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.sampled_from(["SMSProject", "SMSFromAlpha", "VoiceProject", "$type", "projectId"])
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text() | st.sampled_from(["$type", "projectId", "placeholders", "sender", "text"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)
odd_keys = st.dictionaries(st.integers() | st.none() | st.booleans(), json_values, max_size=3)
contents = st.one_of(
    json_values,
    odd_keys,
    st.fixed_dictionaries(
        {"$type": st.sampled_from(["SMSProject", "WhatsappProject", "VoiceProject"])},
        optional={
            "projectId": json_values,
            "placeholders": json_values,
            "nextAttemptUtc": json_values,
        },
    ),
    st.fixed_dictionaries(
        {"$type": st.just("SMSFromAlpha")}, optional={"sender": json_values, "text": json_values}
    ),
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    client_message_id=st.one_of(st.text(), json_values),
    recipient=st.one_of(st.text(), st.from_regex(r"\+?[0-9 ()\-]{6,20}"), json_values),
    content=contents,
)
def test_any_json_like_row_is_screened_or_refused_by_name(
    client_message_id: object, recipient: object, content: object
) -> None:
    try:
        screened = screen_stored(client_message_id, recipient, content)
    except InvalidMessage as problem:
        assert_storable(problem)
        assert problem.field.split(".")[0] in {"client_message_id", "recipient", "content"}
        assert "cannot be screened" not in problem.reason  # every case has its own reason
    else:
        # What passes is what the producer would have stored.
        again = NewMessage.create(
            recipient=screened.recipient,
            content=screened.content,
            client_message_id=screened.client_message_id,
        )
        assert again.row()["content"] == screened.content


@given(st.text() | st.binary())
def test_any_column_text_decodes_or_is_refused_by_name(text: str | bytes) -> None:
    try:
        decode_stored_content(text)
    except InvalidMessage as problem:
        assert problem.field == "content"
        assert_storable(problem)
