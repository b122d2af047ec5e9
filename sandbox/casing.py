"""Newtonsoft.Json's camelCase as its loop runs over UTF-16 code units, for `--camel-case-keys`.

A server built on Newtonsoft's camelCase contract resolver spells dictionary keys this way too,
so `results` comes back keyed `order-42` for the clientMessageId `Order-42`. This follows the
shape of StringUtils.ToCamelCase step by step (the client states the same rule another way, and
a property test holds the two to agreement).
"""

from __future__ import annotations

import unicodedata

_SEPARATORS = frozenset({"Zs", "Zl", "Zp"})


def to_camel_case(text: str) -> str:
    """`text` camel-cased as Newtonsoft does it (`ToCamelCase`)."""
    units = _utf16_units(text)
    if not units or not _upper(units[0]):
        return text
    for index in range(len(units)):
        if index == 1 and not _upper(units[index]):
            break
        following = units[index + 1] if index + 1 < len(units) else None
        if index > 0 and following is not None and not _upper(following):
            # "FOO bar" becomes "foo bar": a separator ends the upper-case word here.
            if _separator(following):
                units[index] = _lower(units[index])
            break
        units[index] = _lower(units[index])
    return b"".join(unit.to_bytes(2, "little") for unit in units).decode(
        "utf-16-le", "surrogatepass"
    )


def _utf16_units(text: str) -> list[int]:
    data = text.encode("utf-16-le", "surrogatepass")
    return [int.from_bytes(data[i : i + 2], "little") for i in range(0, len(data), 2)]


def _upper(unit: int) -> bool:
    """.NET's char.IsUpper: UppercaseLetter; a surrogate half never is."""
    return not 0xD800 <= unit <= 0xDFFF and unicodedata.category(chr(unit)) == "Lu"


def _separator(unit: int) -> bool:
    """.NET's char.IsSeparator: space, line and paragraph separators."""
    return not 0xD800 <= unit <= 0xDFFF and unicodedata.category(chr(unit)) in _SEPARATORS


def _lower(unit: int) -> int:
    """char.ToLowerInvariant: the one-character lower case (İ gives i)."""
    return ord(chr(unit).lower()[0])
