"""Nothing in an answer can break the record: hostile, malformed, deep or huge answers, typed."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.text import MAX_TEXT_LENGTH
from worker.wiraya.answers import message_outcome
from worker.wiraya.codec import MAX_ANSWER_BYTES, interpret_response
from worker.wiraya.results import (
    Accepted,
    Answered,
    MessageOutcome,
    Rejected,
    RequestFailure,
    SendResult,
    ServerError,
    Transient,
    Unknown,
)

TRACKING = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"


def ok(tracking_id: object = TRACKING) -> dict[str, object]:
    return {"trackingId": tracking_id, "success": True, "isTransientError": False}


def answer(body: bytes | str, sent: list[str], status: int = 200) -> SendResult:
    raw = body.encode() if isinstance(body, str) else body
    return interpret_response(status, {"content-type": "application/json"}, raw, sent)


def outcomes(result: SendResult) -> dict[str, MessageOutcome]:
    assert isinstance(result, Answered), result
    return result.outcomes


def is_clean(text: str) -> bool:
    """Storable in a PostgreSQL text column and one log line: no control or surrogate code."""
    return (
        len(text) <= MAX_TEXT_LENGTH
        and text == " ".join(text.split())
        and not any(unicodedata.category(char) in {"Cc", "Cs"} for char in text)
    )


def reasons(result: SendResult) -> list[str]:
    if isinstance(result, RequestFailure):
        return [result.reason]
    return [o.reason for o in result.outcomes.values() if not isinstance(o, Accepted)]


# Tracking ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tracking_id", [TRACKING, TRACKING.upper(), "0" * 32])
def test_a_32_hex_tracking_id_is_accepted(tracking_id: str) -> None:
    assert message_outcome(ok(tracking_id)) == Accepted(tracking_id)


@pytest.mark.parametrize(
    "tracking_id",
    [
        TRACKING[:-1],
        TRACKING + "0",
        "g" * 32,
        TRACKING[:16] + "\x00" + TRACKING[17:],
        f" {TRACKING}",
        f"{TRACKING}\n",
        "0x" + TRACKING[2:],
        "\uff10" * 32,  # full-width digits: "hex" to str.isdigit, not to Wiraya
        "not-a-tracking-id",
    ],
)
def test_a_malformed_tracking_id_is_unknown_with_the_reason(tracking_id: str) -> None:
    outcome = message_outcome(ok(tracking_id))

    assert isinstance(outcome, Unknown)
    assert "not 32 hex characters" in outcome.reason
    assert is_clean(outcome.reason)


@pytest.mark.parametrize("tracking_id", [None, 123, ["a"], {"id": TRACKING}, True, ""])
def test_a_missing_or_mistyped_tracking_id_is_unknown(tracking_id: object) -> None:
    outcome = message_outcome(ok(tracking_id))

    assert isinstance(outcome, Unknown)
    assert "tracking id" in outcome.reason


def test_one_tracking_id_given_to_two_messages_makes_both_unknown() -> None:
    body = json.dumps({"results": {"a": ok(), "b": ok(TRACKING.upper()), "c": ok(OTHER)}})

    result = outcomes(answer(body, ["a", "b", "c"]))

    assert result["c"] == Accepted(OTHER)
    for key in ("a", "b"):
        outcome = result[key]
        assert isinstance(outcome, Unknown)
        assert "given to 2 messages" in outcome.reason


# Duplicated keys --------------------------------------------------------------------------------


def test_a_message_given_twice_in_results_is_unknown() -> None:
    body = (
        f'{{"results": {{"a": {{"trackingId": "{TRACKING}", "success": true}}, '
        '"a": {"success": false, "isTransientError": false, "errorMessage": "no"}, '
        f'"b": {{"trackingId": "{OTHER}", "success": true}}}}}}'
    )

    result = outcomes(answer(body, ["a", "b"]))

    assert result["b"] == Accepted(OTHER)
    assert isinstance(result["a"], Unknown)
    assert "twice" in result["a"].reason


@pytest.mark.parametrize("field", ["success", "trackingId", "isTransientError"])
def test_a_result_naming_a_field_twice_is_unknown(field: str) -> None:
    members = {
        "success": '"success": true, "success": false',
        "trackingId": f'"trackingId": "{TRACKING}", "trackingId": "{OTHER}"',
        "isTransientError": '"isTransientError": true, "isTransientError": false',
    }
    entry = {
        "success": f'{members["success"]}, "trackingId": "{TRACKING}"',
        "trackingId": f'"success": true, {members["trackingId"]}',
        "isTransientError": f'"success": false, {members["isTransientError"]}',
    }[field]
    body = f'{{"results": {{"a": {{{entry}}}}}}}'

    outcome = outcomes(answer(body, ["a"]))["a"]

    assert isinstance(outcome, Unknown)
    assert field in outcome.reason and "twice" in outcome.reason


def test_results_given_twice_is_a_server_error() -> None:
    body = f'{{"results": {{"a": {json.dumps(ok())}}}, "results": {{}}}}'

    result = answer(body, ["a"])

    assert isinstance(result, ServerError)
    assert "twice" in result.reason


# Wrong types ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "[]",
        '"results"',
        "null",
        "42",
        '{"results": []}',
        '{"results": [{"a": {}}]}',
        '{"results": "a"}',
        '{"results": null}',
        '{"outcomes": {}}',
        '{"results": {"a": {"success": true, "trackingId": NaN}}}',
    ],
)
def test_an_answer_without_a_results_object_is_a_server_error(body: str) -> None:
    result = answer(body, ["a"])

    assert isinstance(result, ServerError)
    assert result.status == 200


@pytest.mark.parametrize(
    ("entry", "kind", "says"),
    [
        (None, Unknown, "unreadable result"),
        ([1, 2], Unknown, "unreadable result"),
        ("accepted", Unknown, "unreadable result"),
        ({}, Unknown, "success"),
        ({"success": "true", "trackingId": TRACKING}, Unknown, "success"),
        ({"success": 1, "trackingId": TRACKING}, Unknown, "success"),
        ({"success": False, "isTransientError": "false"}, Transient, "isTransientError"),
        ({"success": False, "isTransientError": False, "errorMessage": 42}, Rejected, "success"),
        ({"success": False, "isTransientError": False, "errorMessage": None}, Rejected, "false"),
    ],
)
def test_mistyped_result_fields_never_raise_and_say_what_was_wrong(
    entry: object, kind: type, says: str
) -> None:
    body = json.dumps({"results": {"a": entry}})

    outcome = outcomes(answer(body, ["a"]))["a"]

    assert type(outcome) is kind
    assert says in outcome.reason  # type: ignore[union-attr]


# Control characters and lengths -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "blocked\u0000 recipient",
        "blocked\x1b[31m recipient\x07",
        "blocked\r\n\tby\x7f the\x85 operator",
        "blocked \ud800 lone surrogate",
        "x" * 100_000,
        "\u0000" * 1000,
    ],
)
def test_error_texts_from_results_are_clean_and_bounded(text: str) -> None:
    entry = {"success": False, "isTransientError": False, "errorMessage": text}
    body = json.dumps({"results": {"a": entry}})  # \u0000 and \ud800 as JSON escapes

    outcome = outcomes(answer(body, ["a"]))["a"]

    assert isinstance(outcome, Rejected)
    assert is_clean(outcome.reason)
    outcome.reason.encode("utf-8")  # PostgreSQL takes it


@pytest.mark.parametrize("status", [400, 401, 429, 500, 502])
def test_error_bodies_with_control_characters_give_clean_reasons(status: int) -> None:
    body = json.dumps({"message": "boom\u0000\u001b[2J\u2028" + "y" * 3000}).encode()

    result = answer(body, ["a"], status)

    assert isinstance(result, RequestFailure)
    assert is_clean(result.reason)
    assert "boom" in result.reason


def test_raw_control_bytes_in_a_text_body_give_a_clean_reason() -> None:
    result = answer(b"Service \x00down\x1b\xff\xfe for maintenance", ["a"], 503)

    assert isinstance(result, ServerError)
    assert is_clean(result.reason)
    assert "Service" in result.reason and "down" in result.reason


def test_a_reason_built_anywhere_is_clean() -> None:
    assert Rejected("a\x00b\n\nc").reason == "a b c"
    assert ServerError("\x00" * 10, 500).reason == ""
    assert len(Unknown("z" * 10_000).reason) == MAX_TEXT_LENGTH


# Deep and huge answers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"results": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    ],
    ids=["arrays", "objects", "inside-results"],
)
@pytest.mark.parametrize("status", [200, 400, 500])
def test_a_deeply_nested_answer_is_a_request_level_failure(body: bytes, status: int) -> None:
    result = answer(body, ["a"], status)

    assert isinstance(result, ServerError)
    assert result.status == status
    assert is_clean(result.reason)


@pytest.mark.parametrize("status", [200, 400, 500])
def test_an_answer_over_the_size_limit_is_a_server_error(status: int) -> None:
    filler = {"results": {"a": ok()}, "padding": "p" * MAX_ANSWER_BYTES}
    body = json.dumps(filler).encode()
    assert len(body) > MAX_ANSWER_BYTES

    result = answer(body, ["a"], status)

    assert isinstance(result, ServerError)
    assert "larger than" in result.reason


def test_an_answer_of_50_mb_is_refused_not_parsed() -> None:
    entries = {f"m{i}": ok() for i in range(600_000)}  # about 50 MB of valid JSON

    result = answer(json.dumps({"results": entries}).encode(), ["m0"])

    assert isinstance(result, ServerError)
    assert "larger than" in result.reason


# Whatever the answer: no exception, every sent id answered, every text storable -----------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)
ENTRY_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "success": st.booleans() | JSON_VALUES,
        "trackingId": st.just(TRACKING) | st.text(max_size=40) | JSON_VALUES,
        "isTransientError": st.booleans() | JSON_VALUES,
        "errorMessage": st.text(max_size=40) | JSON_VALUES,
        "message": st.text(max_size=40),
    },
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["a", "b", "A", "Order-1", "order-1", "x"]),
        ENTRY_FIELDS | JSON_VALUES,
        max_size=5,
    )
)
def test_any_results_give_every_sent_id_a_storable_outcome(entries: dict[str, Any]) -> None:
    sent = ["a", "b", "Order-1"]

    result = answer(json.dumps({"results": entries}), sent)

    got = outcomes(result)
    assert list(got) == sent
    for outcome in got.values():
        if isinstance(outcome, Accepted):
            assert outcome.tracking_id == TRACKING
        else:
            assert is_clean(outcome.reason)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=100, max_value=599), st.binary(max_size=300) | st.text().map(str.encode)
)
def test_any_status_and_body_give_a_typed_result_never_an_exception(
    status: int, body: bytes
) -> None:
    result = answer(body, ["a"], status)

    assert all(is_clean(reason) for reason in reasons(result))
