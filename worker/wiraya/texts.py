"""Text from an answer made fit to store and log: one line, no control characters, bounded.

Reasons end up in `last_error` (a PostgreSQL text column, which refuses NUL), in logs and in
Flower, so whatever the API or a proxy sends, a reason holds no control character (C0, DEL, C1),
no lone surrogate (not encodable as UTF-8) and no bidirectional override (which can disguise a
log line), its whitespace is collapsed, and it is at most MAX_REASON_LENGTH characters long.
"""

from __future__ import annotations

import re

MAX_REASON_LENGTH = 500
_SCAN_LIMIT = 16 * MAX_REASON_LENGTH  # a reason is cut anyway: never clean megabytes for it
_UNFIT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def clean_text(text: str, limit: int = MAX_REASON_LENGTH) -> str:
    """`text` as one clean line of at most `limit` characters ("…" marks a cut)."""
    line = " ".join(_UNFIT.sub(" ", text[:_SCAN_LIMIT]).split())
    if len(line) <= limit and len(text) <= _SCAN_LIMIT:
        return line
    return line[: limit - 1].rstrip() + "…" if len(line) >= limit else line + "…"


def sample(value: str, limit: int = 60) -> str:
    """A short quoted sample of a value for a reason: repr escapes what it cannot show."""
    shown = repr(value)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"
