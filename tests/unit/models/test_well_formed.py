"""The fast path of stored content agrees with the pydantic models wherever it answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from models import (
    DEFAULT_LIMITS,
    Content,
    InvalidMessage,
    MessageLimits,
    NewMessage,
    parse_content,
)
from models.content import INT32_MAX, PROJECT_TYPES, SMSFromAlpha
from models.well_formed import ALPHA_FIELDS, PROJECT_FIELDS, api_form

TYPES = ["SMSProject", "WhatsappProject", "VoiceProject", "SMSFromAlpha"]
# Text near every rule: blank, control characters, tab and newline, lone surrogates, the
# sender's length, a right-to-left mark (allowed), Unicode spaces and digits.
TEXTS = st.sampled_from(
    [
        "",
        " ",
        "\u00a0",
        "\u2028",
        "x",
        "Wiraya",
        "x" * 11,
        "x" * 12,
        "a\tb\nc",
        "a\x00b",
        "\x1b[2J",
        "\x7f",
        "\x85",
        "\ud800",
        "\u200f\u05e9\u05dc\u05d5\u05dd",
        "١٢٣",
        "Order #5678",
    ]
) | st.text(max_size=14)
NUMBERS = st.sampled_from([0, 1, -1, INT32_MAX, INT32_MAX + 1, 2**64, True, False, 1.0, "7"])
# Dates written the producer's way and every other way: days and times out of range, offsets.
DATES = (
    st.builds(
        "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}{}".format,
        st.integers(0, 9999),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 60),
        st.integers(0, 61),
        st.sampled_from(["Z", "Z", "+01:00", "", ".5Z"]),
    )
    | st.sampled_from(["2031-01-01", "٢٠٣١-01-01T08:00:00Z", "", "now", 1_900_000_000])
    | st.none()
)
OTHERS = TEXTS | NUMBERS | st.none() | st.lists(TEXTS, max_size=3)
# Each field: a valid value half the time, else one near (or far from) its rules.
FIELDS: dict[str, st.SearchStrategy[object]] = {
    "projectId": st.integers(1, INT32_MAX) | NUMBERS | st.integers(),
    "placeholders": st.lists(st.text(max_size=6), max_size=4)
    | st.lists(TEXTS | NUMBERS, max_size=4)
    | OTHERS,
    "nextAttemptUtc": DATES,
    "sender": st.sampled_from(["Wiraya", "x" * 11, " a"]) | TEXTS | NUMBERS,
    "text": st.text(min_size=1, max_size=20) | TEXTS | NUMBERS,
    "project_id": st.integers(1, 9),  # the Python name: not a field of the API form
}


@st.composite
def contents(draw: st.DrawFn) -> dict[str, Any]:
    """Content near a valid shape of any type: each field present or not, right or wrong."""
    type_name = draw(st.sampled_from(TYPES) | st.sampled_from(TYPES) | OTHERS)
    own = {"sender", "text"} if type_name == "SMSFromAlpha" else {"projectId", "placeholders"}
    content = {"$type": type_name}
    for name, values in FIELDS.items():
        if draw(st.integers(0, 9)) < (9 if name in own else 2):  # mostly the type's own
            content[name] = draw(values)
    return content


LIMITS = st.just(DEFAULT_LIMITS) | st.builds(
    MessageLimits,
    text_chars=st.integers(1, 12),
    placeholder_chars=st.integers(1, 12),
    placeholders_total_chars=st.integers(1, 20),
)


def outcome(function: Callable[[], object]) -> tuple[str, object]:
    try:
        return "given", function()
    except InvalidMessage as problem:
        return "refused", str(problem)


def by_models(content: dict[str, Any], limits: MessageLimits) -> dict[str, Any]:
    parsed = parse_content(content)
    parsed.check_limits(limits)
    return parsed.to_api()


def assert_agree(content: dict[str, Any], limits: MessageLimits) -> None:
    """The fast path's answer is the models' answer, unless it leaves the content to them."""
    fast = outcome(lambda: api_form(content, limits))
    if fast != ("given", None):  # None: the models decide
        assert fast == outcome(lambda: by_models(content, limits))


@given(contents(), LIMITS)
@example({"$type": "SMSProject", "projectId": True}, DEFAULT_LIMITS)
@example(
    {"$type": "SMSProject", "projectId": 1, "nextAttemptUtc": "2031-02-29T08:00:00Z"},
    DEFAULT_LIMITS,
)
@example({"$type": "SMSFromAlpha", "sender": "\u2028", "text": "x"}, DEFAULT_LIMITS)
@example({"$type": "SMSProject", "projectId": 1, "placeholders": ["a", "\ud800"]}, DEFAULT_LIMITS)
def test_where_the_fast_path_answers_the_models_give_the_same(
    content: dict[str, Any], limits: MessageLimits
) -> None:
    assert_agree(content, limits)


# Each field's values at the edges of its rules, each tried in a valid content of each type.
MISSING = object()
EDGES: dict[str, list[object]] = {
    "$type": ["SMSFromNumber", "smsproject", "", None, 1, ["SMSProject"], MISSING],
    "sender": [
        "x" * 11,
        "x" * 12,
        "",
        " ",
        "\u00a0",
        "\u2028",
        " a",
        "a\x00",
        "a\tb",
        "\x85",
        "\ud800",
        "\u200fא",
        1,
        None,
        ["x"],
        MISSING,
    ],
    "text": [
        "x",
        "",
        " ",
        "\t",
        "a\tb\nc",
        "a\x0bb",
        "\x7f",
        "\ud800",
        "\u200f\u05e9\u05dc\u05d5\u05dd",
        "x" * 13,
        "\u3000",
        0,
        None,
        MISSING,
    ],
    "projectId": [1, 0, -1, INT32_MAX, INT32_MAX + 1, 2**64, True, False, 1.0, "7", None, MISSING],
    "placeholders": [
        [],
        ["", "x"],
        ["x" * 6],
        ["x" * 5] * 3,
        ["a\x00"],
        ["ok", "\ud800"],
        ["\t\n"],
        ["\x1b"],
        [1],
        [None],
        ["a", ["b"]],
        (),
        "x",
        {},
        None,
        MISSING,
    ],
    "nextAttemptUtc": [
        "2031-01-01T08:00:00Z",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2031-02-29T08:00:00Z",
        "2032-02-29T08:00:00Z",
        "2031-01-01T24:00:00Z",
        "2031-01-01T08:60:00Z",
        "2031-01-01T08:00:60Z",
        "2031-13-01T08:00:00Z",
        "0000-01-01T00:00:00Z",
        "2031-01-01T08:00:00z",
        "2031-01-01T08:00:00",
        "2031-01-01T08:00:00.5Z",
        "2031-01-01 08:00:00Z",
        "2031-01-01T09:00:00+01:00",
        "٢٠٣١-01-01T08:00:00Z",
        "2031-01-01",
        "",
        1_900_000_000,
        None,
        MISSING,
    ],
    "project_id": [7],
    "extra": ["x"],
}
VALID = {
    "SMSFromAlpha": {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "Your code"},
    **{name: {"$type": name, "projectId": 7, "placeholders": ["John"]} for name in TYPES[:3]},
}
EDGE_CASES = [
    {
        key: value
        for key, value in {**VALID[type_name], field: value}.items()
        if value is not MISSING
    }
    for type_name in TYPES
    for field, values in EDGES.items()
    for value in values
]


@pytest.mark.parametrize("content", EDGE_CASES, ids=repr)
def test_at_every_edge_the_fast_path_gives_what_the_models_give_or_leaves_it_to_them(
    content: dict[str, Any],
) -> None:
    limits = MessageLimits(text_chars=12, placeholder_chars=5, placeholders_total_chars=12)
    assert_agree(content, limits)
    assert_agree(content, DEFAULT_LIMITS)


@pytest.mark.parametrize(
    "content",
    [
        {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "Your code is 123456"},
        {"$type": "SMSProject", "projectId": 7, "placeholders": ["John", "Order #5678"]},
        {"$type": "WhatsappProject", "projectId": 7},
        {
            "$type": "VoiceProject",
            "projectId": INT32_MAX,
            "placeholders": [],
            "nextAttemptUtc": "2031-01-01T09:00:00+01:00",
        },
    ],
)
def test_what_the_producer_stores_takes_the_fast_path(content: dict[str, Any]) -> None:
    stored = NewMessage.create(recipient="46701234567", content=content).row()["content"]
    assert api_form(stored, DEFAULT_LIMITS) == by_models(stored, DEFAULT_LIMITS)


@pytest.mark.parametrize(
    "content",
    [
        {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "x" * 13},
        {"$type": "SMSProject", "projectId": 7, "placeholders": ["x" * 6, "ok"]},
        {"$type": "SMSProject", "projectId": 7, "placeholders": ["x" * 5] * 3},
    ],
)
def test_text_over_a_limit_is_refused_as_the_models_refuse_it(content: dict[str, Any]) -> None:
    limits = MessageLimits(text_chars=12, placeholder_chars=5, placeholders_total_chars=12)
    fast = outcome(lambda: api_form(content, limits))
    assert fast[0] == "refused"
    assert fast == outcome(lambda: by_models(content, limits))


def api_names(content_type: type[Content]) -> set[str]:
    return {field.alias or name for name, field in content_type.model_fields.items()}


def test_the_fast_path_knows_every_field_of_the_models() -> None:
    assert api_names(SMSFromAlpha) == ALPHA_FIELDS
    assert {cls.type_name for cls in PROJECT_TYPES} == set(TYPES) - {SMSFromAlpha.type_name}
    for project_type in PROJECT_TYPES:
        assert api_names(project_type) == PROJECT_FIELDS
