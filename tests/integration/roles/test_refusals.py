"""Each role is refused what its process must not do, and `outbox grants` leaves exactly that.

A producer reads no other message's recipient or content, nor changes a row once inserted; a
worker rewrites no message and moves no delivery status; the receiver touches neither the gate
nor a message's lifecycle; the operator inserts no message and rewrites none.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.exc import ProgrammingError

from tests.conftest import alembic_config
from tests.integration.roles.conftest import ROLE_NAMES, run_as_owner
from worker.ops.cli import main
from worker.ops.grants import grants_sql
from worker.ops.privileges import Role

EngineOf = Callable[[Role], Engine]
INSERT = (
    "INSERT INTO outbox_messages (client_message_id, recipient, content) "
    """VALUES ('other', '46701234567', '{"$type": "SMSProject", "projectId": 1}')"""
)
REFUSED: list[tuple[Role, str]] = [
    ("producer", "SELECT recipient FROM outbox_messages"),
    ("producer", "SELECT content FROM outbox_messages"),
    ("producer", "SELECT last_error FROM outbox_messages"),
    ("producer", "SELECT * FROM outbox_messages"),
    ("producer", "UPDATE outbox_messages SET status = 'cancelled'"),
    ("producer", "DELETE FROM outbox_messages"),
    (
        "producer",
        "INSERT INTO outbox_messages (client_message_id, recipient, content, status) "
        """VALUES ('x', '46701234567', '{}', 'accepted')""",
    ),
    ("producer", "SELECT * FROM outbox_dispatch_gate"),
    ("producer", "SELECT * FROM outbox_delivery_reports"),
    ("worker", INSERT),
    ("worker", "UPDATE outbox_messages SET recipient = '46700000000'"),
    ("worker", "UPDATE outbox_messages SET content = '{}'"),
    ("worker", "UPDATE outbox_messages SET delivery_status = 'DELIVERED'"),
    (
        "worker",
        "INSERT INTO outbox_delivery_reports (tracking_id, status, received_at, report) "
        "VALUES ('t', 'DELIVERED', now(), '{}')",
    ),
    ("receiver", "UPDATE outbox_dispatch_gate SET paused_until = now()"),
    ("receiver", "SELECT * FROM outbox_dispatch_gate"),
    ("receiver", "SELECT recipient FROM outbox_messages"),
    ("receiver", "SELECT content FROM outbox_messages"),
    ("receiver", "UPDATE outbox_messages SET status = 'failed'"),
    ("receiver", "DELETE FROM outbox_messages"),
    ("receiver", "DELETE FROM outbox_delivery_reports"),
    ("receiver", INSERT),
    ("operator", INSERT),
    ("operator", "UPDATE outbox_messages SET recipient = '46700000000'"),
    ("operator", "UPDATE outbox_messages SET tracking_id = 'x'"),
    (
        "operator",
        "INSERT INTO outbox_delivery_reports (tracking_id, status, received_at, report) "
        "VALUES ('t', 'DELIVERED', now(), '{}')",
    ),
]


def refused(engine: Engine, sql: str) -> bool:
    """True when PostgreSQL refuses ``sql`` for lack of a privilege."""
    try:
        with engine.begin() as connection:
            connection.execute(text(sql))
    except ProgrammingError as error:
        return isinstance(error.orig, psycopg.errors.InsufficientPrivilege)
    return False


def test_each_role_is_refused_what_its_process_must_not_do(role_engine: EngineOf) -> None:
    allowed = [(process, sql) for process, sql in REFUSED if not refused(role_engine(process), sql)]
    assert allowed == []


def test_a_second_run_takes_back_rights_granted_meanwhile(
    granted_url: str, role_engine: EngineOf
) -> None:
    producer = ROLE_NAMES["producer"]
    run_as_owner(granted_url, f'GRANT ALL ON outbox_messages, outbox_dispatch_gate TO "{producer}"')
    assert not refused(role_engine("producer"), "SELECT content FROM outbox_messages")
    run_as_owner(granted_url, grants_sql(ROLE_NAMES, create=True))
    assert refused(role_engine("producer"), "SELECT content FROM outbox_messages")
    assert refused(role_engine("producer"), "SELECT * FROM outbox_dispatch_gate")


def test_the_early_report_trigger_runs_as_its_owner_with_a_fixed_search_path(
    granted_url: str, role_engine: EngineOf
) -> None:
    query = text(
        "SELECT prosecdef, proconfig, has_function_privilege('public', p.oid, 'EXECUTE') "
        "FROM pg_proc AS p WHERE proname = :name"
    )
    with role_engine("operator").connect() as connection:
        for name in ("outbox_messages_match_reports", "outbox_message_is"):
            definer, config, public = connection.execute(query, {"name": name}).one()
            assert (definer, config, public) == (True, ["search_path=public, pg_temp"], False)
    command.downgrade(alembic_config(granted_url), "0007_match_reports_per_statement")
    with role_engine("operator").connect() as connection:
        found = connection.execute(query, {"name": "outbox_messages_match_reports"}).one()
        assert found == (False, None, True)
        assert connection.scalar(text("SELECT to_regproc('outbox_message_is')")) is None


def test_grants_apply_runs_the_script_as_the_owner_and_metrics_only_reads(
    postgres_url: str, role_names: dict[Role, str], role_engine: EngineOf
) -> None:
    run_as_owner(postgres_url, grants_sql(role_names, create=True))  # the roles exist
    run_as_owner(postgres_url, f'REVOKE ALL ON outbox_messages FROM "{ROLE_NAMES["metrics"]}"')
    roles = [f"--{process}={name}" for process, name in role_names.items()]
    assert main(["--database-url", postgres_url, "grants", *roles, "--apply"]) == 0
    metrics = role_engine("metrics")
    assert not refused(metrics, "SELECT count(*) FROM outbox_messages")
    assert refused(metrics, "DELETE FROM outbox_messages")
    assert refused(metrics, "UPDATE outbox_dispatch_gate SET reason = 'x'")
