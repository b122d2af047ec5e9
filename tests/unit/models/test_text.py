"""One rule for text that reaches a column, a log line or a terminal, whatever the input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.text import MAX_TEXT_LENGTH, clean, escaped, shown

BIDI = [
    "\u061c",
    "\u200e",
    "\u200f",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
]
CONTROLS = [*map(chr, range(0x00, 0x20)), *map(chr, range(0x7F, 0xA0))]
UNSAFE = [*CONTROLS, *BIDI, "\ud800", "\udfff"]


def is_safe(text: str) -> bool:
    """Nothing a terminal could obey or misread, and encodable as UTF-8."""
    text.encode()
    return not any(character in UNSAFE for character in text)


@pytest.mark.parametrize("character", UNSAFE, ids=lambda c: f"U+{ord(c):04X}")
def test_clean_takes_out_every_unsafe_character(character: str) -> None:
    assert clean(f"a{character}b") in {"a b", "ab"}


def test_clean_makes_one_bounded_line() -> None:
    assert clean("a\x00b\x1bc\u2028d\ud800e\x7ff") == "a b c d e f"
    assert clean("  many   spaces\n\nand lines ") == "many spaces and lines"
    # A bidirectional override reversing the rest of a log line is taken out.
    assert clean("refused \u202egnp.exe") == "refused gnp.exe"
    cut = clean("y" * 10_000)
    assert len(cut) == MAX_TEXT_LENGTH and cut.endswith("…")


def test_clean_reads_no_more_of_a_huge_text_than_the_limit_needs() -> None:
    huge = " " * 50_000_000 + "end"
    assert clean(huge) == "…"
    assert clean("x" * 50_000_000, limit=10) == "x" * 9 + "…"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "None"),
        (42, "42"),
        (b"\x00ab", "b'\\x00ab'"),
        (ValueError("bad\x00news"), "bad news"),
    ],
)
def test_clean_takes_any_value(value: object, expected: str) -> None:
    assert clean(value) == expected


def test_clean_never_raises_on_values_str_cannot_render() -> None:
    nested: list[object] = []
    for _ in range(100_000):
        nested = [nested]
    assert clean(nested) == "a list"
    assert clean(10**5000) == "an integer of 16610 bits"


@given(st.text())
def test_whatever_the_text_clean_shown_and_escaped_are_safe(text: str) -> None:
    assert is_safe(clean(text)) and len(clean(text)) <= MAX_TEXT_LENGTH
    assert is_safe(shown(text)) and len(shown(text)) <= 2 + 4 * 10 * 40
    assert is_safe(escaped(text))


def test_shown_quotes_escapes_and_cuts() -> None:
    assert shown("a\u202eb") == "'a\\u202eb'"
    assert shown("z" * 100) == repr("z" * 40) + "..."
    assert shown("z" * 100, limit=10) == repr("z" * 10) + "..."
    assert shown([1, 2]) == "a list" and shown(None) == "None"
