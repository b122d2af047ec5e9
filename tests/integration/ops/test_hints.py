"""What users get wrong, each found and said in one line: a missing migration, a second beat, a
host clock far from the database's, a lease no longer than the timeout, a transaction pooler the
URL does not name (behind a real PgBouncer)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from tests.conftest import alembic_config, service_missing
from tests.e2e.pooler import pgbouncer_argv
from tests.integration.ops.endpoint import free_port
from worker import pooler_hint
from worker.database import make_engine
from worker.ops.hints import SchemaBehind, clock_skew
from worker.ops.privileges import worker_duties
from worker.ops.start_check import require_rights
from worker.runtime.beat_lock import BeatLock
from worker.settings import Settings, SettingsError

BIN = Path(sys.executable).parent
BEHIND = "0012_definer_triggers"


def test_a_missing_migration_stops_a_process_with_the_column_and_the_revision(
    engine: Engine,
) -> None:
    url = engine.url.render_as_string(hide_password=False)
    command.downgrade(alembic_config(url), BEHIND)
    with pytest.raises(SchemaBehind) as refused:
        require_rights(engine, "worker", worker_duties())
    assert str(refused.value) == (
        # The first column missing, by table: 0016's on the gate comes before 0013's on messages.
        f"outbox_dispatch_gate lacks the column api_paused_until: the database is behind this "
        f"version's migrations (at revision {BEHIND}); run `alembic upgrade head` (or the "
        "migration Job) before starting the outbox's processes"
    )
    command.upgrade(alembic_config(url), "head")
    require_rights(engine, "worker", worker_duties())


def test_a_worker_started_on_a_database_behind_stops_with_one_line(
    postgres_url: str, tmp_path: Path
) -> None:
    command.downgrade(alembic_config(postgres_url), BEHIND)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "WIRAYA_", "CELERY_"))
    }
    env.update(
        OUTBOX_DATABASE_URL=postgres_url,
        CELERY_BROKER_URL="filesystem://",
        OUTBOX_BROKER_FOLDER=str(tmp_path / "broker"),
        WIRAYA_BASE_URL="http://127.0.0.1:9",
    )
    argv = [str(BIN / "outbox-celery"), "-A", "worker", "worker", "--pool", "solo"]
    done = subprocess.run(
        argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 3, done.stderr
    lines = [line for line in done.stderr.splitlines() if "lacks the column" in line]
    assert lines == [
        "outbox: outbox_dispatch_gate lacks the column api_paused_until: the database is behind "
        f"this version's migrations (at revision {BEHIND}); run `alembic upgrade head` (or the "
        "migration Job) before starting the outbox's processes"
    ]


def test_a_second_beat_is_named_and_the_first_ones_end_frees_the_lock(postgres_url: str) -> None:
    first, second, third = BeatLock(postgres_url), BeatLock(postgres_url), BeatLock(postgres_url)
    assert first.take() is None
    line = second.take()
    assert line is not None
    assert line.startswith("another beat is already running against this outbox: outbox beat ")
    assert f":{os.getpid()} (" in line
    assert line.endswith(
        "run exactly one beat (a Kubernetes Deployment of one replica with the Recreate strategy)"
    )
    first.release()
    assert third.take() is None
    third.release()


def test_no_beat_lock_without_a_direct_postgresql_url() -> None:
    assert BeatLock(None).take() is None
    assert BeatLock("sqlite:///outbox.db").take() is None


@pytest.mark.parametrize(
    ("apart", "line"),
    [
        (timedelta(seconds=29), None),
        (timedelta(seconds=-30), None),
        (timedelta(minutes=5, seconds=12), "this host's clock is 5m12s ahead of the database's"),
        (-timedelta(hours=2, minutes=3), "this host's clock is 2h03m behind the database's"),
    ],
)
def test_a_host_clock_far_from_the_databases_is_one_line(
    apart: timedelta, line: str | None
) -> None:
    database = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    said = clock_skew(database, database + apart)
    if line is None:
        assert said is None
    else:
        assert said is not None and said.startswith(line + ": the outbox keeps")
        assert said.endswith("check its time synchronisation (NTP)")


def test_a_lease_no_longer_than_the_timeout_says_why_in_one_line() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ(
            {},
            OUTBOX_LEASE_SECONDS="30",
            WIRAYA_TIMEOUT_SECONDS="60",
            WIRAYA_BASE_URL="http://localhost:8080",
        )
    assert (
        "OUTBOX_LEASE_SECONDS: 30 must be at least WIRAYA_TIMEOUT_SECONDS (60) + 4 s: a lease "
        in str(refused.value)
    )
    assert "\n" not in str(refused.value)


# -- a transaction pooler the URL does not name --------------------------------------------


@pytest.fixture
def bouncer_url(postgres_url: str, tmp_path: Path) -> Iterator[str]:
    """postgres_url through a real PgBouncer in transaction mode, without ?pooler=transaction."""
    port = free_port()
    try:
        argv = pgbouncer_argv(tmp_path, port, postgres_url)
    except FileNotFoundError as error:
        service_missing("pgbouncer", error)
    tmp_path.chmod(0o755)
    bouncer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, bouncer)
        yield make_url(postgres_url).set(port=port).render_as_string(hide_password=False)
    finally:
        bouncer.terminate()
        bouncer.wait(timeout=10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "pgbouncer exited"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("pgbouncer did not listen")


def test_a_pooler_without_the_option_is_named_once(
    bouncer_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    pooler_hint._told.clear()
    engine = make_engine(bouncer_url, pool_size=2)
    errors: list[str] = []
    with (
        caplog.at_level(logging.ERROR, "worker.database"),
        engine.connect() as one,
        engine.connect() as two,
    ):
        # Each client runs the same statement until psycopg prepares it (its sixth run):
        # behind the pooler, the two clients' prepared statements meet on one server.
        for _ in range(8):
            for connection in (one, two):
                try:
                    connection.execute(text("SELECT 1 + :n"), {"n": 1})
                    connection.commit()
                except DBAPIError as error:
                    errors.append(str(error.orig))
                    connection.rollback()
    engine.dispose()
    assert errors, "the pooler never mixed the clients' prepared statements"
    assert all(pooler_hint.looks_like_a_pooler(Exception(error)) for error in errors)
    hints = [r.getMessage() for r in caplog.records if "?pooler=transaction" in r.getMessage()]
    assert hints == [pooler_hint.HINT]
    assert hints[0].startswith("looks like PgBouncer in transaction mode: add ?pooler=transaction")


@pytest.mark.parametrize(
    "message",
    [
        'prepared statement "_pg3_0" does not exist',
        'prepared statement "_pg3_12" already exists',
        'bind message supplies 2 parameters, but prepared statement "_pg3_1" requires 1',
    ],
)
def test_the_pooler_signs_are_recognised(message: str) -> None:
    assert pooler_hint.looks_like_a_pooler(Exception(message))
    assert not pooler_hint.looks_like_a_pooler(Exception('relation "x" does not exist'))
