"""The check a process makes at start: can its role do its job? One query, one line if not.

A worker that can send but not record resends what it sent (the record fails after the API
accepted); a receiver that cannot store answers 500 to every report. Each finds out here
instead, before its first batch or request: one SELECT asks PostgreSQL about every right its
duties need (worker/ops/privileges.py) and the first one missing stops the process with
``worker cannot record: UPDATE on outbox_messages(tracking_id) is not granted to role x``.
SQLite has no roles: nothing to check there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from models.databases import database_of
from worker.errors import MissingRight
from worker.ops.privileges import REPORTS, Duty, Need, Right, TriggerRuns


@dataclass(frozen=True)
class _Question:
    """One boolean the query answers, and what its ``false`` means."""

    duty: str
    sql: str
    missing: str  # "{role}" stands for the role's name


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _has(function: str, lookup: str, name: str, *args: str) -> str:
    quoted = ", ".join(_literal(arg) for arg in args)
    return f"coalesce({function}({lookup}({_literal(name)}), {quoted}), false)"


def _questions(duty: str, need: Need) -> list[_Question]:
    if isinstance(need, TriggerRuns):
        definer = (
            "coalesce((SELECT prosecdef FROM pg_proc "
            f"WHERE oid = to_regprocedure({_literal(need.function + '()')})), true)"
        )
        reads = _has("has_table_privilege", "to_regclass", REPORTS, "SELECT")
        writes = _has("has_table_privilege", "to_regclass", REPORTS, "UPDATE")
        missing = (
            f"the trigger {need.function} runs with the rights of role {{role}}, which may not "
            f"read and update {REPORTS} (migration 0012_definer_triggers runs it as its owner)"
        )
        return [_Question(duty, f"({definer} OR ({reads} AND {writes}))", missing)]
    return [
        _Question(duty, sql, f"{shown} is not granted to role {{role}}")
        for sql, shown in _asks(need)
    ]


def _asks(right: Right) -> list[tuple[str, str]]:
    if right.kind == "SEQUENCE":
        sql = _has("has_sequence_privilege", "to_regclass", right.on, right.privilege)
        return [(sql, right.described())]
    if right.kind == "FUNCTION":
        sql = _has("has_function_privilege", "to_regprocedure", right.on, right.privilege)
        return [(sql, right.described())]
    if not right.columns:
        sql = _has("has_table_privilege", "to_regclass", right.on, right.privilege)
        return [(sql, right.described())]
    return [
        (
            _has("has_column_privilege", "to_regclass", right.on, column, right.privilege),
            right.described((column,)),
        )
        for column in right.columns
    ]


def missing_right(connection: Connection, process: str, duties: Iterable[Duty]) -> str | None:
    """The line naming the first right ``process`` lacks for ``duties``; None when it has all."""
    if not database_of(connection).has_roles:
        return None
    questions: list[_Question] = []
    asked: set[str] = set()
    for duty in duties:
        for need in duty.needs:
            for question in _questions(duty.name, need):
                if question.sql not in asked:
                    asked.add(question.sql)
                    questions.append(question)
    answers = ", ".join(question.sql for question in questions)
    row = connection.execute(text(f"SELECT current_user, ARRAY[{answers}]")).one()
    role, granted = row[0], row[1]
    for question, ok in zip(questions, granted, strict=True):
        if not ok:
            return f"{process} cannot {question.duty}: {question.missing.format(role=role)}"
    return None


def require_rights(engine: Engine, process: str, duties: Iterable[Duty]) -> None:
    """Raise MissingRight (one line) unless ``process`` can do every one of ``duties``."""
    with engine.connect() as connection:
        line = missing_right(connection, process, duties)
    if line is not None:
        raise MissingRight(line)
