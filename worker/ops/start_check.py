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
from models.outbox import Base
from worker.errors import MissingRight
from worker.ops.hints import require_schema
from worker.ops.privileges import REPORTS, Duty, Need, Right, TriggerRuns

# What a schema question's failure means: a migration has not run (require_schema says which).
SCHEMA_BEHIND = "a column of the outbox's tables is missing: run the migrations"


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


def _column_is_there(table: str, column: str) -> str:
    return (
        f"EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass({_literal(table)}) "
        f"AND attname = {_literal(column)} AND attnum > 0 AND NOT attisdropped)"
    )


def _has_column(table: str, column: str, privilege: str) -> str:
    """The column right, asked only of a column that exists (a missing one is the schema's
    question, asked first: PostgreSQL would otherwise fail the whole statement)."""
    right = _has("has_column_privilege", "to_regclass", table, column, privilege)
    return f"(CASE WHEN {_column_is_there(table, column)} THEN {right} ELSE false END)"


def _schema_questions() -> list[_Question]:
    """One per outbox table: it is absent (left to the rights), or has every column this
    version reads (else a migration has not run)."""
    return [
        _Question(
            "start",
            f"(to_regclass({_literal(table.name)}) IS NULL OR ("
            + " AND ".join(_column_is_there(table.name, column.name) for column in table.columns)
            + "))",
            SCHEMA_BEHIND,
        )
        for table in Base.metadata.sorted_tables
    ]


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
        (_has_column(right.on, column, right.privilege), right.described((column,)))
        for column in right.columns
    ]


def missing_right(connection: Connection, process: str, duties: Iterable[Duty]) -> str | None:
    """The line naming the first right ``process`` lacks for ``duties``; None when it has all.
    SchemaBehind first, when a table lacks a column this version reads."""
    if not database_of(connection).has_roles:
        require_schema(connection)  # no roles; the schema is read from SQLite's own file
        return None
    questions = _schema_questions()
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
        if not ok and question.missing == SCHEMA_BEHIND:
            require_schema(connection)  # names the column and the revision
        if not ok:
            return f"{process} cannot {question.duty}: {question.missing.format(role=role)}"
    return None


def require_rights(engine: Engine, process: str, duties: Iterable[Duty]) -> None:
    """Raise MissingRight (one line) unless ``process`` can do every one of ``duties``; first,
    SchemaBehind when a migration it needs has not run. One statement when all is well."""
    with engine.connect() as connection:
        line = missing_right(connection, process, duties)
    if line is not None:
        raise MissingRight(line)
