"""Text made safe: one rule for what must not reach a column, a log line or a terminal, the
three ways of applying it (clean, show, escape), and what a producer's fields refuse.

The rule: C0 and C1 control characters (NUL, which PostgreSQL cannot store; escape sequences,
which a terminal obeys), DEL, lone surrogates (no UTF-8 for them), and the bidirectional marks,
embeddings, overrides and isolates (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069),
which make a line read as something else. It is applied by:

- ``clean``: a text stored or logged as one line (an answer's reason, ``last_error``, a
  database error): each unsafe character becomes a space, whitespace is collapsed, and the
  line is cut at ``limit`` characters ("…" marks a cut); a huge text is read only as far as
  the limit needs, and a value that is not a string is rendered first, never raising.
- ``shown``: any input quoted in an error message: ``repr`` escapes what is not printable
  (bidirectional controls included), strings are cut, containers are described, not printed.
- ``escaped``: a value read from the table or a report shown whole to an operator: each unsafe
  character written as ``\\uXXXX``; ``masked`` shows only a recipient's last digits so.

What a producer may store is another question, answered by refusing instead of cleaning:
message text refuses C0 controls but tab and newline, DEL and lone surrogates
(``text_problem``); an identifier refuses every control (``identifier_problem``). Bidirectional
marks stay allowed in message text: right-to-left languages need them.
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
# The rule: what a column, a terminal or a log reader could refuse, obey or misread.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
MAX_TEXT_LENGTH = 500  # a cleaned line, at most
READ_PER_CHARACTER = 16  # a text is read up to this many characters per character kept
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


def clean(value: object, limit: int = MAX_TEXT_LENGTH) -> str:
    """``value`` as one line fit for a column and a log: every unsafe character a space,
    whitespace collapsed, at most ``limit`` characters ("…" marks a cut). Never raises."""
    text = value if isinstance(value, str) else _rendered(value)
    scanned = limit * READ_PER_CHARACTER
    line = " ".join(_UNSAFE.sub(" ", text[:scanned]).split())
    if len(line) <= limit and len(text) <= scanned:
        return line
    return line[: limit - 1].rstrip() + "…" if len(line) >= limit else line + "…"


def _rendered(value: object) -> str:
    """``str(value)``, or what ``shown`` makes of it when ``str`` fails (a structure nested
    too deep, an integer too long)."""
    try:
        return str(value)
    except (RecursionError, ValueError):
        return shown(value)


def shown(value: object, limit: int = SHOWN_CHARACTERS) -> str:
    """A short, printable rendering of any input, safe in an error message.

    Never raises: containers are described, not printed (printing one nested thousands deep
    recurses), strings are quoted and cut at ``limit``, and integers too long for ``repr`` are
    described by size.
    """
    if isinstance(value, str):
        # repr escapes every character that is not printable (controls, surrogates, bidi).
        return repr(value) if len(value) <= limit else repr(value[:limit]) + "..."
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
    return _UNSAFE.sub(lambda found: f"\\u{ord(found.group()):04x}", value)


def masked(recipient: str) -> str:
    """A recipient fit for a log line: its last SHOWN_DIGITS characters, escaped, the rest
    starred."""
    hidden = max(len(recipient) - SHOWN_DIGITS, 0)
    return "*" * hidden + escaped(recipient[hidden:])
