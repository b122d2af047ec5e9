"""A message's tenant: the sender it goes out for, named in settings and kept in one column.

The empty name is the default tenant (the column's default, so a plain-SQL insert that names no
tenant sends as before). A name is short and plain, letters, digits and ``._-``, starting with a
letter or digit: it is written in settings lists (``tenant=key,other=key2``), in metric labels
and on command lines, where a comma, an equals sign or a space would be read as something else.
"""

from __future__ import annotations

import re

from models.errors import InvalidMessage

FIELD = "tenant"
DEFAULT = ""
MAX_LENGTH = 64
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def problem(value: object) -> str | None:
    """Why ``value`` cannot name a tenant, or None (the empty name is the default tenant)."""
    if not isinstance(value, str):
        return f"must be text, got {type(value).__name__}"
    if value == DEFAULT or NAME.fullmatch(value):
        return None
    if len(value) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters (got {len(value)})"
    return "must be letters, digits and ._- starting with a letter or digit, or empty (the default)"


def checked(value: object) -> str:
    """The tenant as stored, or InvalidMessage naming ``tenant`` and why."""
    reason = problem(value)
    if reason is not None:
        raise InvalidMessage(FIELD, reason)
    assert isinstance(value, str)
    return value
