"""Text rules every field shares: which characters are refused, and how bad input is shown.

An error message about bad input ends up in ``last_error``, logs and Flower: it must stay short
and printable whatever the input, so values are shown through ``shown`` and never echoed raw.
Any other value read from the table or a callback goes through ``escaped`` before it reaches a
terminal or a log line (a raw-SQL row or a report may hold escape sequences, which a terminal
obeys, and bidirectional overrides, which disguise a line), and a recipient through ``masked``.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, and lone surrogates (not valid Unicode: no UTF-8 for
# them). PostgreSQL cannot store NUL in text or jsonb, and a phone shows none of the others.
_REFUSED_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")
# In an identifier (client_message_id) every control character is refused: tab and newline
# too, and the C1 controls (U+0080-U+009F: NEL, CSI, ...), which terminals act on.
_REFUSED_IN_IDENTIFIER = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
SHOWN_CHARACTERS = 40
# What a terminal or a log reader could take for something else: C0 and C1 controls (escape
# sequences start there), DEL, bidirectional marks, embeddings, overrides and isolates, and
# lone surrogates (no UTF-8 for them).
_UNSAFE_ON_SCREEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
SHOWN_DIGITS = 4  # a masked recipient keeps its last digits


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be message text (tab and newline are fine), or None."""
    return _problem(_REFUSED_IN_TEXT.search(value))


def identifier_problem(value: str) -> str | None:
    """Why ``value`` cannot be an identifier (no control character at all), or None."""
    return _problem(_REFUSED_IN_IDENTIFIER.search(value))


def _problem(found: re.Match[str] | None) -> str | None:
    if found is None:
        return None
    character = found.group()
    where = f"({character!r} at position {found.start()})"
    if "\ud800" <= character <= "\udfff":
        return f"holds a lone surrogate {where}, which is not valid Unicode"
    return f"holds a control character {where}"


def shown(value: object) -> str:
    """A short, printable rendering of any input, safe in an error message.

    Never raises: containers are described, not printed (printing one nested thousands deep
    recurses), strings are cut, and integers too long for ``repr`` are described by size.
    """
    if isinstance(value, str):
        # repr escapes every character that is not printable (controls, surrogates).
        return (
            repr(value)
            if len(value) <= SHOWN_CHARACTERS
            else repr(value[:SHOWN_CHARACTERS]) + "..."
        )
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return (
            repr(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
        )
    return kind(value)


def kind(value: object) -> str:
    """What a value is, in JSON's words where it has one ("a list", "null", "an object")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def field_name(key: object) -> str | None:
    """``key`` as it may stand in a field path (``content.<key>``), or None when it cannot."""
    if isinstance(key, str) and 0 < len(key) <= SHOWN_CHARACTERS and key.isprintable():
        return key
    return None


def escaped(value: str) -> str:
    """``value`` with every character a terminal or log reader could obey or misread written
    as a ``\\uXXXX`` escape (valid inside a JSON string too); everything else unchanged."""
    return _UNSAFE_ON_SCREEN.sub(lambda found: f"\\u{ord(found.group()):04x}", value)


def masked(recipient: str) -> str:
    """A recipient fit for a log line: its last SHOWN_DIGITS characters, escaped, the rest
    starred."""
    hidden = max(len(recipient) - SHOWN_DIGITS, 0)
    return "*" * hidden + escaped(recipient[hidden:])
