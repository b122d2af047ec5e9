"""Result keys as a Newtonsoft.Json server may spell them: its camelCase rule, and the matching."""

from __future__ import annotations

import json
import unicodedata
import uuid

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sandbox.casing import to_camel_case as newtonsofts_loop
from worker.wiraya.codec import interpret_response
from worker.wiraya.matching import match_results, newtonsoft_camel_case
from worker.wiraya.results import Accepted, Answered, Unknown

TRACKING = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"

# Newtonsoft's own expectations for StringUtils.ToCamelCase (and System.Text.Json's CamelCase
# policy, which followed it until .NET 8).
NEWTONSOFT_EXAMPLES = [
    ("URLValue", "urlValue"),
    ("URL", "url"),
    ("ID", "id"),
    ("I", "i"),
    ("", ""),
    ("Person", "person"),
    ("iPhone", "iPhone"),
    ("IPhone", "iPhone"),
    ("I Phone", "i Phone"),
    ("I  Phone", "i  Phone"),
    (" IPhone", " IPhone"),
    (" IPhone ", " IPhone "),
    ("IsCIA", "isCIA"),
    ("VmQ", "vmQ"),
    ("Xml2Json", "xml2Json"),
    ("SnAkEcAsE", "snAkEcAsE"),
    ("SnA__kEcAsE", "snA__kEcAsE"),
    ("SnA__ kEcAsE", "snA__ kEcAsE"),
    ("already_snake_case_ ", "already_snake_case_ "),
    ("IsJSONProperty", "isJSONProperty"),
    ("SHOUTING_CASE", "shoutinG_CASE"),
    ("9999-12-31T23:59:59.9999999Z", "9999-12-31T23:59:59.9999999Z"),
    ("Hi!! This is text. Time to test.", "hi!! This is text. Time to test."),
    ("BUILDING", "building"),
    ("BUILDING Property", "building Property"),
    ("Building Property", "building Property"),
    ("BUILDING PROPERTY", "building PROPERTY"),
]
# What that rule makes of clientMessageIds.
ID_EXAMPLES = [
    ("Order-42", "order-42"),
    ("ORDER-42", "ordeR-42"),  # the last capital before a non-separator stays: Newtonsoft's quirk
    ("ID1", "iD1"),
    ("AB\u00a0C", "ab\u00a0C"),  # a no-break space is a separator (Zs) like a space
    ("AB\u2028C", "ab\u2028C"),  # so is the line separator (Zl)
    ("AB\tC", "aB\tC"),  # a tab is a control character, not a separator
    ("ÅSA-1", "åsA-1"),
    ("\u0130D", "id"),  # İ lowers to i alone (the invariant culture's simple mapping)
    ("Ǆ-1", "ǆ-1"),  # Lu with a lower-case form
    ("ǅa", "ǅa"),  # title case (Lt) is not upper case
    ("Ⅻ-1", "Ⅻ-1"),  # a Roman numeral is upper to Python, a number (Nl) to .NET
    ("\U00010400\U00010401", "\U00010400\U00010401"),  # astral capitals: two UTF-16 units
    ("A\U00010400", "a\U00010400"),
    ("550e8400e29b41d4a716446655440000", "550e8400e29b41d4a716446655440000"),
]


@pytest.mark.parametrize(("text", "expected"), NEWTONSOFT_EXAMPLES + ID_EXAMPLES)
def test_newtonsofts_camel_case(text: str, expected: str) -> None:
    assert newtonsoft_camel_case(text) == expected


@pytest.mark.parametrize(("text", "expected"), NEWTONSOFT_EXAMPLES + ID_EXAMPLES)
def test_the_sandboxs_transliteration_of_the_loop_agrees(text: str, expected: str) -> None:
    assert newtonsofts_loop(text) == expected


ID_TEXT = st.text(
    alphabet=st.sampled_from("ABCXYZabcxyz019-_ .#\t\u00a0\u2028\u2029\u0130ÅåǄǅǆⅫ\u03d2\U00010400")
    | st.characters(),
    max_size=12,
)


@given(ID_TEXT)
@example("ABC DEF")
@example("A\u00a0B")
def test_the_rule_and_newtonsofts_loop_agree_on_any_text(text: str) -> None:
    assert newtonsoft_camel_case(text) == newtonsofts_loop(text)


@given(ID_TEXT)
def test_only_a_leading_run_of_capitals_is_lowered(text: str) -> None:
    spelled = newtonsoft_camel_case(text)

    assert len(spelled) == len(text)
    changed = [i for i, (a, b) in enumerate(zip(text, spelled, strict=True)) if a != b]
    end = max(changed, default=-1) + 1
    assert spelled[end:] == text[end:]
    assert all(unicodedata.category(char) == "Lu" for char in text[:end])
    assert spelled[:end] == "".join(char.lower()[0] for char in text[:end])


@given(st.uuids())
def test_lower_case_hex_ids_are_spelled_as_they_are(value: uuid.UUID) -> None:
    assert newtonsoft_camel_case(value.hex) == value.hex
    assert newtonsoft_camel_case(str(value)) == str(value)


# Matching results to the messages sent ----------------------------------------------------------


def test_an_exact_key_comes_first() -> None:
    match = match_results({"Order-42", "order-42"}, ["Order-42"])

    assert (match.keys, match.ambiguous) == ({"Order-42": "Order-42"}, {})


def test_otherwise_the_key_as_newtonsoft_spells_the_id() -> None:
    match = match_results({"order-42", "ordeR-7"}, ["Order-42", "ORDER-7", "missing"])

    assert match.keys == {"Order-42": "order-42", "ORDER-7": "ordeR-7"}
    assert match.ambiguous == {}


def test_two_messages_colliding_on_one_key_are_both_refused() -> None:
    match = match_results({"order-42"}, ["Order-42", "order-42", "other"])

    assert match.keys == {}
    assert set(match.ambiguous) == {"Order-42", "order-42"}


def test_two_ids_that_camel_case_alike_are_both_refused() -> None:
    match = match_results({"ab"}, ["AB", "Ab"])

    assert set(match.ambiguous) == {"AB", "Ab"}


def test_ids_spelled_exactly_are_not_ambiguous_though_they_would_collide() -> None:
    match = match_results({"Order-42", "order-42"}, ["Order-42", "order-42"])

    assert match.keys == {"Order-42": "Order-42", "order-42": "order-42"}
    assert match.ambiguous == {}


def test_an_answer_keyed_by_camel_cased_ids_is_read() -> None:
    body = json.dumps(
        {
            "results": {
                "order-42": {"trackingId": TRACKING, "success": True},
                "ordeR-7": {"trackingId": OTHER, "success": True},
            }
        }
    ).encode()

    result = interpret_response(200, {}, body, ["Order-42", "ORDER-7"])

    assert result == Answered({"Order-42": Accepted(TRACKING), "ORDER-7": Accepted(OTHER)})


def test_an_ambiguous_key_leaves_both_messages_unknown_with_the_reason() -> None:
    body = json.dumps({"results": {"order-42": {"trackingId": TRACKING, "success": True}}})

    result = interpret_response(200, {}, body.encode(), ["Order-42", "order-42"])

    assert isinstance(result, Answered)
    for outcome in result.outcomes.values():
        assert isinstance(outcome, Unknown)
        assert "ambiguous" in outcome.reason
        assert "'order-42'" in outcome.reason
