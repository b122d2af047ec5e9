"""Recipients: phone numbers written the usual ways become MSISDN digits, or are refused."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from models import InvalidMessage, normalize_recipient


@pytest.mark.parametrize(
    "written",
    [
        "+46 70-123 45 67",
        "0046701234567",
        "46701234567",
        "+46701234567",
        "+46 (70) 123 45 67",
        "00 46 70 123 45 67",
        "+46.70.123.45.67",
        "+46\u00a070\u00a0123\u00a045\u00a067",  # no-break spaces, as pasted from documents
        " +46701234567 ",
        "+46 (0)70-123 45 67",  # the trunk prefix, dialled only inside the country
        "+46(0)701234567",
        "0046 (0)70 123 45 67",
        "+46\t70\t123 45 67",
    ],
)
def test_usual_spellings_become_msisdn_digits(written: str) -> None:
    assert normalize_recipient(written) == "46701234567"


@pytest.mark.parametrize("digits", ["12345678", "123456789012345"])
def test_eight_and_fifteen_digits_are_the_bounds(digits: str) -> None:
    assert normalize_recipient(digits) == digits


@pytest.mark.parametrize(
    ("written", "why"),
    [
        ("hello", "not a phone number"),
        ("46701234567x", "not a phone number"),
        ("46 70 ABC 45 67", "not a phone number"),
        ("++46701234567", "not a phone number"),
        ("+", "not a phone number"),
        ("", "not a phone number"),
        ("   ", "not a phone number"),
        ("\u0664\u0666\u0667\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667", "not a phone"),
        ("0701234567", "national number"),
        ("070-123 45 67", "national number"),
        ("+0701234567", "national number"),
        ("000046701234567", "national number"),
        ("1234567", "7 digits"),
        ("+46 70", "4 digits"),
        ("1234567890123456", "16 digits"),
        ("00 1234 5678 9012 3456", "16 digits"),
        ("(0)70 123 45 67", "national number"),
        ("(0)46 70 123 45 67", "national number"),
        ("+(0)46 70 123 45 67", "right after the country code"),
        ("+4670 (0)123 45 67", "right after the country code"),
        ("+46 70 123 (0)45 67", "right after the country code"),
        ("+46 (0)(0)70 123 45 67", "once"),
        ("+46 (0) 70 (0) 123", "once"),
        ("+46 (0)", "2 digits"),
        ("+4670\x00123 45 67", "control character"),
        ("+4670\x1f123 45 67", "control character"),
        ("+46 70 123 45 67" + " " * 100, "too long"),
    ],
)
def test_bad_numbers_are_refused_with_a_reason(written: str, why: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        normalize_recipient(written)
    assert caught.value.field == "recipient"
    assert why in caught.value.reason
    assert str(caught.value).startswith("recipient: ")


@pytest.mark.parametrize(
    "value", [46701234567, 4.6701234567e10, None, b"46701234567", ["46701234567"], True], ids=repr
)
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(InvalidMessage) as caught:
        normalize_recipient(value)
    assert caught.value.field == "recipient"
    assert "string" in caught.value.reason


# --- the grammar, as properties -------------------------------------------------------------
#
# number      = [prefix] country [trunk] national     (digits 8-15 in all, the first not 0)
# prefix      = "+" | "00"
# country     = 1-3 digits, the first not 0
# trunk       = "(0)", only after a prefix and the country code
# separators  = spaces of any kind, tab, newline, "-", ".", "(", ")" between any two parts

SEPARATORS = [" ", "-", ".", "\u00a0", "\u2009", "\t", " - ", "  "]
MAX_WRITTEN = 64


@st.composite
def msisdns(draw: st.DrawFn) -> tuple[str, str]:
    """An MSISDN split into its country code and the rest."""
    country = draw(st.from_regex(r"[1-9][0-9]{0,2}", fullmatch=True))
    rest_length = draw(st.integers(max(0, 8 - len(country)), 15 - len(country)))
    rest = draw(st.text("0123456789", min_size=rest_length, max_size=rest_length))
    return country, rest


def spaced(draw: st.DrawFn, digits: str) -> str:
    """Digits with optional separators between them."""
    gaps = draw(st.lists(st.sampled_from(["", "", *SEPARATORS]), min_size=len(digits)))
    return "".join(digit + gap for digit, gap in zip(digits, gaps, strict=False)) or digits


@st.composite
def written_forms(draw: st.DrawFn, country: str, rest: str, trunk: bool) -> str:
    prefix = draw(
        st.sampled_from(["", "+", "00", "+ ", "00 "])
        if not trunk
        else st.sampled_from(["+", "00", "+ "])
    )
    gap = draw(st.sampled_from(["", *SEPARATORS]))
    middle = gap + "(0)" + draw(st.sampled_from(["", " "])) if trunk else gap
    return prefix + spaced(draw, country) + middle + spaced(draw, rest)


@given(st.data(), msisdns(), st.booleans())
def test_any_msisdn_round_trips_through_formatting(
    data: st.DataObject, parts: tuple[str, str], trunk: bool
) -> None:
    country, rest = parts
    written = data.draw(written_forms(country, rest, trunk))
    assume(len(written) <= MAX_WRITTEN)
    assert normalize_recipient(written) == country + rest


@given(msisdns())
def test_normalizing_is_idempotent(parts: tuple[str, str]) -> None:
    msisdn = "".join(parts)
    assert normalize_recipient(normalize_recipient(msisdn)) == msisdn


@given(st.from_regex(r"[1-9][0-9]{0,6}|[1-9][0-9]{15,25}", fullmatch=True), st.booleans())
def test_any_too_short_or_too_long_number_is_refused(digits: str, trunk: bool) -> None:
    written = f"+{digits[0]} (0){digits[1:]}" if trunk else "+" + digits
    with pytest.raises(InvalidMessage, match="digits"):
        normalize_recipient(written)


@given(st.data(), st.from_regex(r"0[1-9][0-9]{6,13}", fullmatch=True))
def test_any_national_number_is_refused(data: st.DataObject, digits: str) -> None:
    written = spaced(data.draw, digits)
    with pytest.raises(InvalidMessage, match="national number"):
        normalize_recipient(written)


@given(st.data(), msisdns())
def test_a_trunk_prefix_without_a_country_code_is_refused(
    data: st.DataObject, parts: tuple[str, str]
) -> None:
    written = "(0)" + spaced(data.draw, "".join(parts))
    with pytest.raises(InvalidMessage, match="national number"):
        normalize_recipient(written)


@given(
    st.data(),
    msisdns(),
    st.characters(categories=["Nd"]).filter(lambda c: not c.isascii()),
)
def test_any_non_ascii_digit_is_refused(
    data: st.DataObject, parts: tuple[str, str], digit: str
) -> None:
    msisdn = "".join(parts)
    at = data.draw(st.integers(0, len(msisdn)))
    with pytest.raises(InvalidMessage, match="not a phone number"):
        normalize_recipient("+" + msisdn[:at] + digit + msisdn[at:])


@given(st.data(), msisdns(), st.sampled_from([*map(chr, range(0x20)), "\x7f"]))
def test_any_control_character_but_tab_and_newline_is_refused(
    data: st.DataObject, parts: tuple[str, str], control: str
) -> None:
    msisdn = "".join(parts)
    at = data.draw(st.integers(0, len(msisdn)))
    written = "+" + msisdn[:at] + control + msisdn[at:]
    if control in "\t\n":
        assert normalize_recipient(written) == msisdn
    else:
        with pytest.raises(InvalidMessage, match="control character"):
            normalize_recipient(written)


@given(st.text(max_size=80))
def test_any_text_is_normalised_or_refused_with_a_printable_reason(text: str) -> None:
    try:
        digits = normalize_recipient(text)
    except InvalidMessage as problem:
        assert problem.field == "recipient"
        assert str(problem).isprintable()
        assert len(str(problem)) < 200
    else:
        assert digits.isascii() and digits.isdigit() and 8 <= len(digits) <= 15
