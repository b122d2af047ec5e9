"""Recipients as Wiraya wants them: MSISDN digits, country code first, no '+' or leading zero.

The grammar of a written number:

    number     = [prefix] country [trunk] national    8-15 digits in all, the first not 0
    prefix     = "+" | "00"
    country    = 1-3 digits
    trunk      = "(0)": the national trunk prefix, dialled only inside the country; dropped,
                 and only allowed after a prefix and the country code ("+46 (0)70 ...")
    separators = spaces of any kind, tab, newline, "-", ".", "(", ")", anywhere
"""

from __future__ import annotations

import re

from models.errors import InvalidMessage
from models.text import shown, text_problem

_SEPARATORS = re.compile(r"[\s\-().]")
_TRUNK = "(0)"
MIN_DIGITS, MAX_DIGITS = 8, 15
MAX_COUNTRY_DIGITS = 3
MAX_WRITTEN = 64  # longer is no phone number, however spaced: refused before any parsing


def normalize_recipient(value: object) -> str:
    """Return the MSISDN for a phone number written the usual ways, or raise InvalidMessage.

    "+46 70-123 45 67", "+46 (0)70-123 45 67" and "0046701234567" all become "46701234567".
    """
    if not isinstance(value, str):
        raise InvalidMessage("recipient", f"must be a string of digits, got {type(value).__name__}")
    if _is_msisdn(value):  # already normalised: every row the producer stored
        return value
    if len(value) > MAX_WRITTEN:
        raise _refused(f"has {len(value)} characters: too long to be a phone number")
    problem = text_problem(value)
    if problem is not None:
        raise _refused(problem)
    head, trunk, rest = value.partition(_TRUNK)
    if _TRUNK in rest:
        raise _refused(f"{shown(value)} has more than one (0): give the trunk prefix once")
    compact = _international(_SEPARATORS.sub("", head), bool(trunk), value)
    compact += _SEPARATORS.sub("", rest)
    if not compact.isascii() or not compact.isdigit():
        raise _refused(f"{shown(value)} is not a phone number (digits only)")
    if compact.startswith("0"):
        raise _refused(f"{shown(value)} is a national number; give the country code first")
    if not MIN_DIGITS <= len(compact) <= MAX_DIGITS:
        raise _refused(
            f"{shown(value)} has {len(compact)} digits; an MSISDN has {MIN_DIGITS}-{MAX_DIGITS}"
        )
    return compact


def _is_msisdn(value: str) -> bool:
    return (
        MIN_DIGITS <= len(value) <= MAX_DIGITS
        and value.isascii()
        and value.isdigit()
        and value[0] != "0"
    )


def _international(head: str, trunk: bool, value: str) -> str:
    """The digits before a "(0)", or the whole number when there is none, without its prefix."""
    if head.startswith("+"):
        digits = head[1:]
    elif head.startswith("00"):
        digits = head[2:]
    elif trunk:  # "(0)70 ...": no country code before the trunk prefix
        raise _refused(f"{shown(value)} is a national number; give the country code first")
    else:
        return head
    if trunk and not (digits.isdigit() and 1 <= len(digits) <= MAX_COUNTRY_DIGITS):
        raise _refused(
            f"{shown(value)}: a (0) trunk prefix goes right after the country code, "
            f'as in "+46 (0)70 ..."'
        )
    return digits


def _refused(reason: str) -> InvalidMessage:
    return InvalidMessage("recipient", reason)
