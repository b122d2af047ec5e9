"""Behind PgBouncer in transaction pooling mode: drain, crash recovery, wake-ups and the CLI.

Each test starts a real `pgbouncer` on a free port in front of its fresh database, with two
server connections for every client (so consecutive transactions of one client land on
different server connections), and reaches the database through it with `?pooler=transaction`.
Beat listens for inserts on the direct URL (OUTBOX_LISTEN_URL), which LISTEN needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.conftest import service_missing
from tests.e2e.harness import (
    Stack,
    assert_recovered,
    assert_verdict,
    check_every_message,
    kill_a_worker_mid_batch,
    project_messages,
)
from tests.e2e.pooler import SERVER_CONNECTIONS
from worker.runtime.wakeup import psycopg_dsn

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(240)]

OUTBOX = str(Path(sys.executable).with_name("outbox"))
DRAIN_TIMEOUT = 90.0
# What psycopg's server-side prepared statements meet behind a transaction pooler.
POOLER_ERRORS = ("prepared statement", "bind message supplies")


@pytest.fixture
def pooled(stack: Stack) -> Stack:
    """The stack behind its own PgBouncer in transaction mode."""
    try:
        stack.start_pgbouncer()
    except FileNotFoundError as error:
        service_missing("pgbouncer", error)
    return stack


def _direct_url(stack: Stack) -> str:
    return stack.settings["OUTBOX_LISTEN_URL"]


def _server_backends(stack: Stack) -> int:
    """Server connections to the stack's database, besides beat's direct ones and this one."""
    with psycopg.connect(psycopg_dsn(_direct_url(stack)), autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND query NOT LIKE 'LISTEN%' "
            "AND application_name NOT LIKE 'outbox beat %'"  # beat's lock: direct, as LISTEN
        ).fetchone()
    return int(row[0]) if row else 0


def test_workers_drain_a_backlog_through_pgbouncer(pooled: Stack) -> None:
    admin = pooled.start_sandbox("--latency-ms", "20")
    total = 2_000
    pooled.enqueue(project_messages("pooled", total))
    pooled.start_outbox(workers=2)  # four pool processes and beat share two server connections
    pooled.wait_all_final(total, timeout=DRAIN_TIMEOUT)

    verdict = check_every_message(pooled.rows(), admin.ledger())
    assert_verdict(verdict)
    assert verdict.accepted == total
    logs = pooled.outbox_logs()
    assert not [error for error in POOLER_ERRORS if error in logs], logs[-3000:]
    # Every client went through the pooler: the server saw no more than its pool.
    assert _server_backends(pooled) <= SERVER_CONNECTIONS


def test_a_worker_killed_mid_drain_behind_pgbouncer_loses_nothing(pooled: Stack) -> None:
    total = 1_000
    verdict, _ = kill_a_worker_mid_batch(pooled, "pooled-kill", total)
    assert_recovered(verdict, total)


def test_inserts_wake_workers_through_the_direct_listen_url(pooled: Stack) -> None:
    # No tick comes within the test: only a wake-up on insert can start a dispatch.
    pooled.settings["OUTBOX_POLL_INTERVAL_SECONDS"] = "600"
    admin = pooled.start_sandbox()
    pooled.start_outbox()
    pooled.beat.wait_for_log(r"LISTEN outbox_messages on postgresql")  # type: ignore[union-attr]
    pooled.enqueue(project_messages("woken", 10))
    pooled.wait_all_final(10, timeout=60)
    assert_verdict(check_every_message(pooled.rows(), admin.ledger()))


def test_without_a_listen_url_beat_says_it_polls(pooled: Stack) -> None:
    del pooled.settings["OUTBOX_LISTEN_URL"]
    beat = pooled.start_beat()
    beat.wait_for_log(r"polling every 1 s: set OUTBOX_LISTEN_URL")
    assert "LISTEN outbox_messages on" not in beat.output()


def _outbox(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
    environment["OUTBOX_DATABASE_URL"] = stack.database_url
    return subprocess.run(
        [OUTBOX, *args], env=environment, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_cli_works_through_pgbouncer(pooled: Stack) -> None:
    migrated = _outbox(pooled, "migrate")  # at head already: reads the version through it
    assert migrated.returncode == 0, migrated.stderr
    pooled.enqueue(project_messages("cli", 30))
    with pooled.engine.begin() as connection:
        connection.exec_driver_sql(
            "UPDATE outbox_messages SET status = 'failed', last_error = 'rejected: blocked' "
            "WHERE client_message_id <= 'cli-000009'"
        )
    for _ in range(3):  # the same statements again and again, as a dashboard would run them
        stats = _outbox(pooled, "stats", "--json")
        assert stats.returncode == 0, stats.stderr
        by_status = json.loads(stats.stdout)["by_status"]
        assert (by_status["failed"], by_status["pending"]) == (10, 20)

    retried = _outbox(pooled, "retry", "--error", "rejected", "--yes")
    assert retried.returncode == 0, retried.stderr
    assert pooled.count("status = 'pending'") == 30
    inspected = _outbox(pooled, "inspect", "cli-000003", "--json")
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["status"] == "pending"
    assert not [error for error in POOLER_ERRORS if error in retried.stderr + stats.stderr]
