"""Which key of an answer's `results` answers which message, however the server spelled it.

Wiraya's answers look like Newtonsoft.Json output, whose camelCase contract resolver camel-cases
dictionary keys too: `results` may come back keyed `order-42` for the clientMessageId
`Order-42`. A key equal to the clientMessageId comes first; otherwise the key as Newtonsoft
would spell the id; a key two messages of one request could both own answers neither. Ids
without a leading capital (the default UUID hex) are spelled as they are, so the question never
arises for them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass

_SEPARATORS = frozenset({"Zs", "Zl", "Zp"})  # .NET's char.IsSeparator


def newtonsoft_camel_case(text: str) -> str:
    """`text` as Newtonsoft.Json's StringUtils.ToCamelCase spells it.

    The rule: take the leading run of upper-case letters (Unicode Lu, seen as .NET sees UTF-16
    code units, so a character outside the BMP is never upper case). Lower all of it when it is
    the whole text, or when it is followed by a separator (a space, a no-break space, a line
    separator); lower only its first letter when it is one letter long; otherwise keep its last
    letter, which starts the next word ("URLValue" -> "urlValue", "ORDER-42" -> "ordeR-42").
    Lowering is the invariant culture's one-character mapping.
    """
    run = 0
    while run < len(text) and _is_upper(text[run]):
        run += 1
    if 1 < run < len(text) and not _is_separator(text[run]):
        run -= 1  # the run's last capital begins the next word
    return "".join(_lower(char) for char in text[:run]) + text[run:]


def _is_upper(char: str) -> bool:
    return char <= "\uffff" and unicodedata.category(char) == "Lu"


def _is_separator(char: str) -> bool:
    return char <= "\uffff" and unicodedata.category(char) in _SEPARATORS


def _lower(char: str) -> str:
    """One character's lower case, one character long (İ gives i, as .NET's does)."""
    return char.lower()[0]


@dataclass(frozen=True)
class KeyMatch:
    """Sent ids answered by a results key, and those whose key another message shares."""

    keys: dict[str, str]  # clientMessageId -> the results key that answers it
    ambiguous: dict[str, str]  # clientMessageId -> the results key it would share


def match_results(available: Collection[str], sent_ids: Sequence[str]) -> KeyMatch:
    """Match the ids of one request to the keys of its answer (ids absent from both: missing).

    A message whose key the answer lacks claims the key Newtonsoft would spell for it; a key
    claimed by two messages, or claimed by one and equal to another's id, is ambiguous for all
    of them: their outcome is unknown, and they are resent under the same ids.
    """
    keys = {sent: sent for sent in sent_ids if sent in available}
    claims: dict[str, list[str]] = {}
    for sent in sent_ids:
        if sent not in keys:
            spelled = newtonsoft_camel_case(sent)
            if spelled != sent and spelled in available:
                claims.setdefault(spelled, []).append(sent)
    ambiguous: dict[str, str] = {}
    for key, claimants in claims.items():
        owners = [*claimants, key] if key in keys else claimants
        if len(owners) == 1:
            keys[claimants[0]] = key
            continue
        for owner in owners:
            keys.pop(owner, None)
            ambiguous[owner] = key
    return KeyMatch(keys, ambiguous)
