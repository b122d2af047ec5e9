"""SMS segments: the encoding a text needs (GSM-7 or UCS-2) and how many parts it is billed as.

GSM-7 (3GPP TS 23.038) holds 160 septets in one SMS, 153 per part once the text is split (the
rest carries the concatenation header); a character of its extension table takes two septets
(an escape and the character), and a pair is never split across parts. A text holding any
character outside both tables is sent as UCS-2: 70 UTF-16 units in one SMS, 67 per part, a
surrogate pair never split.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

# The characters that most often turn a text into UCS-2, and the GSM-7 text that stands for
# each: typographic quotes, dashes, the ellipsis and the spaces word processors put in.
TRANSLITERATIONS = {
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u2032": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u2033": '"',
    "\u2013": "-",
    "\u2014": "-",
    "\u2212": "-",
    "\u2026": "...",
    "\u00a0": " ",
    "\u2009": " ",
    "\u202f": " ",
    "\u200b": "",
}


class Encoding(StrEnum):
    """How an SMS text travels."""

    GSM7 = "gsm7"
    """The GSM 7-bit alphabet and its extension table: 160 septets, 153 per part."""
    UCS2 = "ucs2"
    """UTF-16: 70 units, 67 per part."""


@dataclass(frozen=True)
class Segments:
    """A text's encoding and the number of SMS parts it is billed as."""

    encoding: Encoding
    count: int


_GSM7_ALL = _GSM7_BASIC | _GSM7_EXTENSION


def _units(text: str, encoding: Encoding) -> list[int]:
    """Each character's size in its encoding (septets, or UTF-16 units)."""
    if encoding is Encoding.GSM7:
        return [2 if char in _GSM7_EXTENSION else 1 for char in text]
    return [2 if ord(char) > 0xFFFF else 1 for char in text]


def segments_of(text: str) -> Segments:
    """The encoding ``text`` needs and how many parts it takes (an empty text takes one)."""
    if _GSM7_ALL.issuperset(text):
        encoding, single, part = Encoding.GSM7, 160, 153
        total = len(text) + sum(text.count(char) for char in _GSM7_EXTENSION)
    else:
        encoding, single, part = Encoding.UCS2, 70, 67
        total = len(text) + sum(1 for char in text if char > "\uffff")
    if total <= single:
        return Segments(encoding, 1)
    count, used = 1, 0
    for size in _units(text, encoding):  # parts filled in order, a two-unit character whole
        if used + size > part:
            count, used = count + 1, 0
        used += size
    return Segments(encoding, count)


def transliterate(text: str) -> tuple[str, list[str]]:
    """``text`` with the usual UCS-2-forcing characters replaced by GSM-7 ones, and which were."""
    replaced = sorted({char for char in text if char in TRANSLITERATIONS})
    if not replaced:
        return text, []
    return "".join(TRANSLITERATIONS.get(char, char) for char in text), replaced
