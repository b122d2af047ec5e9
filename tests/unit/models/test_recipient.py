"""Recipients: phone numbers written the usual ways become MSISDN digits, or are refused."""

from __future__ import annotations

import pytest
from hypothesis import given
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


msisdns = st.from_regex(r"[1-9][0-9]{7,14}", fullmatch=True)


@st.composite
def written_forms(draw: st.DrawFn, msisdn: str) -> str:
    """The MSISDN with an optional +/00 prefix and spaces or dashes between digits."""
    prefix = draw(st.sampled_from(["", "+", "00", "+ ", "00 "]))
    separators = draw(
        st.lists(
            st.sampled_from(["", "", " ", "-", " - "]), min_size=len(msisdn), max_size=len(msisdn)
        )
    )
    return prefix + "".join(digit + sep for digit, sep in zip(msisdn, separators, strict=True))


@given(st.data(), msisdns)
def test_any_msisdn_round_trips_through_formatting(data: st.DataObject, msisdn: str) -> None:
    written = data.draw(written_forms(msisdn))
    assert normalize_recipient(written) == msisdn


@given(msisdns)
def test_normalizing_is_idempotent(msisdn: str) -> None:
    assert normalize_recipient(normalize_recipient(msisdn)) == msisdn


@given(st.from_regex(r"[1-9][0-9]{0,6}|[1-9][0-9]{15,25}", fullmatch=True))
def test_any_too_short_or_too_long_number_is_refused(digits: str) -> None:
    with pytest.raises(InvalidMessage, match="digits"):
        normalize_recipient("+" + digits)


@given(st.from_regex(r"0[0-9]{7,14}", fullmatch=True).filter(lambda s: not s.startswith("00")))
def test_any_national_number_is_refused(digits: str) -> None:
    with pytest.raises(InvalidMessage, match="national number"):
        normalize_recipient(digits)
