"""The start check: a process missing any one right stops with one line naming it.

For every right of every duty of the worker, beat and the receiver: grant the role everything
`outbox grants` gives it, take back that one right, and the check names it (for a column right,
the column taken back). The check costs one statement; SQLite has nothing to check.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, event

from tests.integration.roles.conftest import ROLE_NAMES, run_as_owner
from worker.database import make_engine
from worker.errors import MissingRight
from worker.ops.grants import grants_sql, quote
from worker.ops.privileges import (
    Duty,
    Right,
    Role,
    TriggerRuns,
    beat_duties,
    receiver_duties,
    worker_duties,
)
from worker.ops.start_check import missing_right, require_rights

EngineOf = Callable[[Role], Engine]
PROCESSES: dict[str, tuple[Role, Callable[[], tuple[Duty, ...]]]] = {
    "worker": ("worker", worker_duties),
    "beat": ("worker", beat_duties),
    "receiver": ("receiver", receiver_duties),
}


def revoke(right: Right, role: str) -> tuple[str, str]:
    """The REVOKE taking ``right`` back (its last column only), and how the check names it."""
    column = right.columns[-1:]
    named = f" ({column[0]})" if column else ""
    sql = f"REVOKE {right.privilege}{named} ON {right.kind} {right.on} FROM {quote(role)}"
    return sql, f"{right.described(column)} is not granted to role {role}"


@pytest.mark.parametrize("process", sorted(PROCESSES))
def test_each_missing_right_is_named_in_one_line(
    granted_url: str, role_engine: EngineOf, process: str
) -> None:
    role, duties = PROCESSES[process]
    engine = role_engine(role)
    rights = [need for duty in duties() for need in duty.needs if isinstance(need, Right)]
    wrong: list[tuple[str, str | None]] = []
    for right in rights:
        sql, named = revoke(right, ROLE_NAMES[role])
        run_as_owner(granted_url, sql)
        with engine.connect() as connection:
            line = missing_right(connection, process, duties())
        if line is None or not (line.startswith(f"{process} cannot ") and line.endswith(named)):
            wrong.append((named, line))
        run_as_owner(granted_url, grants_sql({role: ROLE_NAMES[role]}))
    assert wrong == []
    with engine.connect() as connection:
        assert missing_right(connection, process, duties()) is None


def test_the_worker_names_the_right_the_record_lacks(
    role_engine: EngineOf, granted_url: str
) -> None:
    worker = ROLE_NAMES["worker"]
    run_as_owner(
        granted_url, f"REVOKE UPDATE (tracking_id) ON outbox_messages FROM {quote(worker)}"
    )
    with pytest.raises(MissingRight) as refused:
        require_rights(role_engine("worker"), "worker", worker_duties())
    assert str(refused.value) == (
        "worker cannot record: UPDATE on outbox_messages(tracking_id) "
        f"is not granted to role {worker}"
    )


def test_a_record_trigger_running_with_the_workers_rights_is_named(
    role_engine: EngineOf, granted_url: str
) -> None:
    run_as_owner(granted_url, "ALTER FUNCTION outbox_messages_match_reports() SECURITY INVOKER")
    with pytest.raises(MissingRight) as refused:
        require_rights(role_engine("worker"), "worker", worker_duties())
    line = str(refused.value)
    assert line.startswith(
        "worker cannot record: the trigger outbox_messages_match_reports runs with the rights "
        f"of role {ROLE_NAMES['worker']}, which may not read and update outbox_delivery_reports"
    )
    assert "\n" not in line
    assert TriggerRuns() in worker_duties()[1].needs


def test_the_check_is_one_statement(role_engine: EngineOf) -> None:
    engine = role_engine("receiver")
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    require_rights(engine, "receiver", receiver_duties())
    assert len(statements) == 1


def test_sqlite_has_nothing_to_check(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        require_rights(engine, "worker", worker_duties() + beat_duties())
    finally:
        engine.dispose()
