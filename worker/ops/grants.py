"""`outbox grants`: the SQL that gives each process's role exactly the rights it needs.

Run it as the outbox's owner after every migration (`outbox grants ... | psql`): it first
revokes whatever the role held on the outbox's tables, sequences and functions, then grants what
worker/ops/privileges.py lists for that role, in one transaction, so a re-run leaves each role
with exactly its rights whatever it held before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from worker.errors import GrantsError
from worker.ops.privileges import (
    MESSAGES,
    REPORTS,
    SAME_MESSAGE,
    Right,
    Role,
    TriggerRuns,
    role_duties,
    role_tables,
)

SEQUENCES = (f"{MESSAGES}_id_seq", f"{REPORTS}_id_seq")
FUNCTIONS = (SAME_MESSAGE,)


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier; an empty one or a NUL is refused."""
    if not name or "\x00" in name:
        raise GrantsError(f"{name!r} is not a usable name")
    return '"' + name.replace('"', '""') + '"'


def grants_sql(roles: Mapping[Role, str], *, schema: str = "public", create: bool = False) -> str:
    """The SQL script for ``roles`` (process -> role name), as the owner runs it."""
    names = list(roles.values())
    if len(set(names)) < len(names):
        raise GrantsError("each process needs a role of its own: a name is given twice")
    lines = [
        "-- wiraya-outbox: a role per process (docs/security.md#a-role-per-process).",
        "-- Run as the outbox's owner,"
        "-- after every migration; it revokes what each role held and grants what it needs.",
        "BEGIN;",
    ]
    if create:
        lines += [_create_role(name) for name in names]
    for process, name in roles.items():
        lines += _role_script(process, quote(name), quote(schema))
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


def _create_role(name: str) -> str:
    """CREATE ROLE ... LOGIN unless it exists (its password is set apart, never printed)."""
    return (
        f"DO $$ BEGIN CREATE ROLE {quote(name)} LOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
    )


def _role_script(process: Role, role: str, schema: str) -> list[str]:
    duties = role_duties(process)
    tables = ", ".join(f"{schema}.{table}" for table in role_tables())
    sequences = ", ".join(f"{schema}.{sequence}" for sequence in SEQUENCES)
    functions = ", ".join(f"{schema}.{function}" for function in FUNCTIONS)
    lines = [
        f"-- {process}: {', '.join(duty.name for duty in duties)}",
        f"REVOKE ALL ON TABLE {tables} FROM {role};",
        f"REVOKE ALL ON SEQUENCE {sequences} FROM {role};",
        f"REVOKE ALL ON FUNCTION {functions} FROM {role};",
        f"GRANT USAGE ON SCHEMA {schema} TO {role};",
    ]
    rights = [need for duty in duties for need in duty.needs if not isinstance(need, TriggerRuns)]
    return lines + _grants(merged(rights), role, schema)


def merged(rights: Iterable[Right]) -> list[Right]:
    """One right per privilege and object: a whole-table right covers its columns, and
    column rights on one table add up (in the order first named)."""
    found: dict[tuple[str, str, str], Right] = {}
    for right in rights:
        key = (right.privilege, right.on, right.kind)
        before = found.get(key)
        if before is None:
            found[key] = right
        elif before.columns and right.columns:
            extra = tuple(column for column in right.columns if column not in before.columns)
            found[key] = Right(right.privilege, right.on, before.columns + extra, right.kind)
        else:
            found[key] = Right(right.privilege, right.on, (), right.kind)
    return list(found.values())


def _grants(rights: list[Right], role: str, schema: str) -> list[str]:
    """GRANT statements: one per object for whole-object rights, one per column right."""
    privileges: dict[tuple[str, str], list[str]] = {}
    for right in rights:
        named = f" ({', '.join(right.columns)})" if right.columns else ""
        privileges.setdefault((right.kind, right.on), []).append(right.privilege + named)
    return [
        f"GRANT {', '.join(granted)} ON {kind} {schema}.{on} TO {role};"
        for (kind, on), granted in privileges.items()
    ]
