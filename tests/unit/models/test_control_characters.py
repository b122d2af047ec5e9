"""Control characters: refused in every field by name, tab and newline allowed in message text."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models import InvalidMessage, NewMessage, SMSFromAlpha, SMSProject
from models.text import escaped, masked

ALPHA = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "Your code is 123456"}
PROJECT = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John", "Order #5678"]}
# C0 controls but tab and newline, and DEL: what PostgreSQL cannot store (NUL) or a phone
# should not show.
REFUSED = [chr(code) for code in [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F]]


def refusal(**fields: Any) -> InvalidMessage:
    message = {"recipient": "46701234567", "content": PROJECT, **fields}
    with pytest.raises(InvalidMessage) as caught:
        NewMessage.create(**message)
    return caught.value


def assert_printable(problem: InvalidMessage) -> None:
    """The error text is safe to store and log: no control character of the input in it."""
    assert str(problem).isprintable(), repr(str(problem))


@pytest.mark.parametrize("control", REFUSED, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize(
    ("place", "field"),
    [
        ("text", "content.text"),
        ("sender", "content.sender"),
        ("placeholder", "content.placeholders.1"),
        ("client_message_id", "client_message_id"),
        ("recipient", "recipient"),
    ],
)
def test_each_control_character_is_refused_in_each_field(
    control: str, place: str, field: str
) -> None:
    bad = f"a{control}b"
    fields: dict[str, Any] = {
        "text": {"content": {**ALPHA, "text": bad}},
        "sender": {"content": {**ALPHA, "sender": bad}},
        "placeholder": {"content": {**PROJECT, "placeholders": ["John", bad]}},
        "client_message_id": {"client_message_id": bad},
        "recipient": {"recipient": f"+4670123{control}4567"},
    }[place]
    problem = refusal(**fields)
    assert problem.field == field
    assert "control character" in problem.reason
    assert_printable(problem)


def test_the_reason_shows_which_character_and_where() -> None:
    problem = refusal(content={**ALPHA, "text": "a\x00b"})
    assert problem.reason == "holds a control character ('\\x00' at position 1), got 'a\\x00b'"


@pytest.mark.parametrize("allowed", ["\t", "\n", "line one\nline two", "a\tb"], ids=repr)
def test_tab_and_newline_are_allowed_in_text_and_placeholders(allowed: str) -> None:
    alpha = NewMessage.create(recipient="46701234567", content={**ALPHA, "text": f"x{allowed}"})
    assert alpha.row()["content"]["text"] == f"x{allowed}"
    project = NewMessage.create(
        recipient="46701234567", content={**PROJECT, "placeholders": [allowed]}
    )
    assert project.row()["content"]["placeholders"] == [allowed]


@pytest.mark.parametrize("allowed", ["\t", "\n"], ids=repr)
def test_tab_and_newline_are_still_refused_in_a_client_message_id(allowed: str) -> None:
    assert refusal(client_message_id=f"a{allowed}b").field == "client_message_id"


def test_content_objects_refuse_control_characters_when_built() -> None:
    with pytest.raises(InvalidMessage) as caught:
        SMSFromAlpha(sender="Wiraya", text="a\x00b")
    assert caught.value.field == "content.text"
    with pytest.raises(InvalidMessage) as caught:
        SMSProject(project_id=1, placeholders=["ok", "\x1b[31mred"])
    assert caught.value.field == "content.placeholders.1"


@pytest.mark.parametrize(
    "content",
    [
        {**PROJECT, "pro\x00jectId": 1},
        {**PROJECT, "extra": {"nested\x00key": "v"}},
        {**PROJECT, "placeholders": ["ok", ["nested\x00"]]},
        {**PROJECT, "placeholders": ["ok", {"k\x00": "v"}]},
        {**ALPHA, "$type": "SMS\x00FromAlpha"},
        {**PROJECT, "nextAttemptUtc": "2031-01-01T00:00:00\x00Z"},
    ],
    ids=["key", "nested-key", "nested-list", "nested-dict", "type", "date"],
)
def test_control_characters_anywhere_in_content_are_refused_without_echoing_them(
    content: dict[str, Any],
) -> None:
    problem = refusal(content=content)
    assert problem.field.startswith("content")
    assert_printable(problem)


def test_a_key_with_a_control_character_is_named_escaped() -> None:
    problem = refusal(content={**PROJECT, "pro\x00jectId": 1})
    assert problem.field == "content"
    assert "'pro\\x00jectId'" in problem.reason


@pytest.mark.parametrize("surrogate", ["\ud800", "\udfff"], ids=repr)
def test_lone_surrogates_are_refused_as_invalid_unicode(surrogate: str) -> None:
    problem = refusal(content={**ALPHA, "text": f"a{surrogate}"})
    assert problem.field == "content.text"
    assert "not valid Unicode" in problem.reason
    assert_printable(problem)
    assert refusal(client_message_id=f"a{surrogate}").field == "client_message_id"


@given(st.text(min_size=1).filter(lambda t: any(c in t for c in REFUSED)))
def test_any_text_holding_a_control_character_is_refused(text: str) -> None:
    problem = refusal(content={**ALPHA, "text": text})
    assert problem.field == "content.text"
    assert_printable(problem)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain text, åäö, 中文", "plain text, åäö, 中文"),
        ("\x1b]0;title\x07", "\\u001b]0;title\\u0007"),
        ("a\u202eb\u2066c", "a\\u202eb\\u2066c"),
        ("\x9b2J\x7f", "\\u009b2J\\u007f"),
        ("line\nnext\ttab", "line\\u000anext\\u0009tab"),
        ("\ud800", "\\ud800"),
    ],
)
def test_escaped_writes_what_a_terminal_would_obey_as_escapes(value: str, shown: str) -> None:
    assert escaped(value) == shown


OBEYED = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


@given(st.text())
def test_escaped_leaves_nothing_a_terminal_obeys(value: str) -> None:
    assert OBEYED.search(escaped(value)) is None


@pytest.mark.parametrize(
    ("recipient", "shown"),
    [("+46701234567", "********4567"), ("123", "123"), ("4670123\u202e4567", "********4567")],
)
def test_masked_keeps_the_last_digits_only(recipient: str, shown: str) -> None:
    assert masked(recipient) == shown
