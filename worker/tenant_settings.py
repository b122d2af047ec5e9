"""Settings given per tenant: ``tenant=value`` pairs, as WIRAYA_API_KEYS and its kin are written.

``"clinic=key1,shop=key2"``, or one pair a line (a mounted secret's file, through the
variable's ``_FILE`` twin). The tenant's name is checked as the producer checks it
(models/tenant.py); a key is split at its first ``=`` (a tenant's name holds none, a key may).
An error names the tenant, never a key (the settings' error names the variable).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from pydantic import SecretStr

from models import tenant as tenant_names
from worker.setting_values import HEADER_VALUE

T = TypeVar("T")
PAIRS = re.compile(r"[,\r\n]+")


def pairs(text: str) -> list[tuple[str, str]]:
    """The ``tenant=value`` pairs of ``text``, each tenant named once, in the order given."""
    found: dict[str, str] = {}
    for number, item in enumerate((part.strip() for part in PAIRS.split(text)), start=1):
        if not item:
            continue
        name, equals, value = item.partition("=")
        name = name.strip()
        if not equals or not name:
            raise ValueError(f"entry {number} must be tenant=value")
        problem = tenant_names.problem(name)
        if problem is not None:
            raise ValueError(f"tenant {name[:64]!r} {problem}")
        if name in found:
            raise ValueError(f"tenant {name!r} is named twice")
        found[name] = value.strip()
    return list(found.items())


def per_tenant(parse: Callable[[str, str], T]) -> Callable[[object], object]:
    """A validator reading a variable's text as a mapping of tenant to ``parse(value, where)``
    (the settings' error names the variable; ``where`` names the tenant)."""

    def read(value: object) -> object:
        if not isinstance(value, str):
            return value
        return {name: parse(text, f"tenant {name!r}") for name, text in pairs(value)}

    return read


def tenant_key(text: str, where: str) -> SecretStr:
    """A tenant's API key, as WIRAYA_API_KEY is checked (sent as an HTTP header); never shown."""
    if not HEADER_VALUE.fullmatch(text):
        raise ValueError(
            f"{where}: the key must be printable ASCII, not blank (it is sent as an HTTP header)"
        )
    return SecretStr(text)


MAX_WEIGHT = 1_000.0


def tenant_weight(text: str, where: str) -> float:
    """A tenant's weight: a positive number, at most MAX_WEIGHT."""
    return _positive_number(text, where, "weight", MAX_WEIGHT)


def _positive_number(text: str, where: str, what: str, maximum: float, unit: str = "") -> float:
    """A number above 0 and at most ``maximum``; the error names ``where`` and ``what``."""
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{where}: the {what} must be a number, got {text[:20]!r}") from None
    if not 0 < number <= maximum:
        raise ValueError(f"{where}: the {what} must be above 0 and at most {maximum:g}{unit}")
    return number


MAX_QUOTA = 1_000_000_000


def tenant_quota(text: str, where: str) -> int:
    """A tenant's daily quota: a whole number from 1 to MAX_QUOTA."""
    try:
        quota = int(text)
    except ValueError:
        quota = 0
    if not 1 <= quota <= MAX_QUOTA:
        raise ValueError(f"{where}: the quota must be a whole number from 1 to {MAX_QUOTA:,}")
    return quota


MAX_RATE = 100_000.0  # as OUTBOX_RATE_LIMIT


def tenant_rate(text: str, where: str) -> float:
    """A tenant's key's request rate: requests per second, above 0, at most MAX_RATE."""
    return _positive_number(text, where, "rate", MAX_RATE, " requests/s")
