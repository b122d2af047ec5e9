"""Recipients as Wiraya wants them: MSISDN digits, country code first, no '+' or leading zero."""

from __future__ import annotations

import re

from models.errors import InvalidMessage

_SEPARATORS = re.compile(r"[\s\-().\u00a0]")
MIN_DIGITS, MAX_DIGITS = 8, 15


def normalize_recipient(value: object) -> str:
    """Return the MSISDN for a phone number written the usual ways, or raise InvalidMessage.

    "+46 70-123 45 67" and "0046701234567" both become "46701234567".
    """
    if not isinstance(value, str):
        raise InvalidMessage("recipient", f"must be a string of digits, got {type(value).__name__}")
    compact = _SEPARATORS.sub("", value)
    if compact.startswith("+"):
        compact = compact[1:]
    elif compact.startswith("00"):
        compact = compact[2:]
    if not compact.isascii() or not compact.isdigit():
        raise InvalidMessage("recipient", f"{value!r} is not a phone number (digits only)")
    if compact.startswith("0"):
        raise InvalidMessage(
            "recipient", f"{value!r} is a national number; give the country code first"
        )
    if not MIN_DIGITS <= len(compact) <= MAX_DIGITS:
        raise InvalidMessage(
            "recipient", f"{value!r} has {len(compact)} digits; an MSISDN has {MIN_DIGITS}-15"
        )
    return compact
