"""A list bound as one array's text, which the statement casts (PostgreSQL's look-ups and record).

psycopg adapts a list parameter element by element in Python: for a batch of 500 ids or
recipients that is several times the cost of writing the array's text at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def array_text(values: Sequence[object]) -> str:
    """A list as an array's text (``{1,2}``, ``{"a","b\\"c"}``), which a statement casts to
    the array it means: psycopg adapts a list element by element in Python, several times
    slower for a batch of 500. Integers as they are, anything else quoted and escaped."""
    return "{" + ",".join(map(_array_element, values)) + "}"


def _array_element(value: object) -> str:
    if type(value) is int:
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class ArrayText(TypeDecorator[Sequence[object]]):
    """A list bound as its array's text (``array_text``)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Sequence[object] | None, dialect: Dialect) -> str | None:
        return None if value is None else array_text(value)
