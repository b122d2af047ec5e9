"""``Database.one_of``: a column equal to one of a bound list, whatever text the list holds."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import BigInteger, Engine, Subquery, Text, literal, select, union_all

from models.databases import database_of

# What an array's text would need quoted or escaped: quotes, backslashes, braces, commas,
# spaces at either end, the word NULL, the empty string, and text that is not ASCII.
AWKWARD = ['"', "\\", '\\"', "{a,b}", "a,b", " padded ", "NULL", "null", "", "é ü ☃", "4670"]


def candidates(rows: list[Any], kind: Any) -> Subquery:
    """The values as a table of one column, ``value`` (a union of one-row selects: both
    databases read it)."""
    return union_all(*(select(literal(row, kind).label("value")) for row in rows)).subquery()


def test_text_values_are_found_exactly_as_given(engine: Engine) -> None:
    table = candidates([*AWKWARD, "not wanted", "a", "b"], Text())
    wanted = [*AWKWARD, "missing"]
    with engine.connect() as connection:
        statement = select(table.c.value).where(
            database_of(connection).one_of(table.c.value, "wanted")
        )
        found = connection.scalars(statement, {"wanted": wanted}).all()
    assert sorted(found) == sorted(AWKWARD)


@pytest.mark.parametrize("wanted", [[1, 2**62, -3], [2**62], []])
def test_ids_are_found_exactly_as_given(engine: Engine, wanted: list[int]) -> None:
    table = candidates([1, 2, 2**62, -3], BigInteger())
    with engine.connect() as connection:
        statement = select(table.c.value).where(
            database_of(connection).one_of(table.c.value, "wanted")
        )
        found = connection.scalars(statement, {"wanted": wanted}).all()
    assert sorted(found) == sorted(wanted)
