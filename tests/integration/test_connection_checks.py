"""Pooled connections on real PostgreSQL: pinged only after idling, and a dead one never used."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text

from models.databases.liveness import PING_AFTER, check_before_use
from worker.database import driver_url, make_engine
from worker.ops.processes import wait_for
from worker.runtime.wakeup import psycopg_dsn

pytestmark = pytest.mark.postgres

MARK = "SELECT 'outbox liveness mark'"


class Clock:
    """A monotonic clock that stands still until the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def admin(postgres_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(psycopg_dsn(postgres_url), autocommit=True) as connection:
        yield connection


def checked_engine(url: str, clock: Clock) -> Engine:
    engine = create_engine(driver_url(url), pool_size=1, isolation_level="AUTOCOMMIT")
    check_before_use(engine, monotonic=clock)
    return engine


def last_query(admin: psycopg.Connection[tuple[object, ...]], pid: int) -> str:
    row = admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    assert row is not None
    return str(row[0])


def marked_backend(engine: Engine) -> int:
    """The pooled connection's backend, its last statement the mark (autocommit: no ROLLBACK
    follows at checkin), checked in now."""
    with engine.connect() as connection:
        pid = int(connection.scalar(text("SELECT pg_backend_pid()")) or 0)
        connection.execute(text(MARK))
    return pid


def terminate(admin: psycopg.Connection[tuple[object, ...]], pid: int) -> None:
    """Terminate a backend and wait until it is gone."""
    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    gone = "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %s)"
    wait_for(lambda: bool(admin.execute(gone, (pid,)).fetchone()[0]), timeout=5, what="the end")


@pytest.mark.parametrize(
    ("idle", "pinged"),
    [(PING_AFTER.total_seconds() / 2, False), (PING_AFTER.total_seconds() + 0.01, True)],
    ids=["checked in a moment ago: no ping", "idle past the window: pinged"],
)
def test_a_connection_is_pinged_only_after_it_idled_past_the_window(
    postgres_url: str, admin: psycopg.Connection[tuple[object, ...]], idle: float, pinged: bool
) -> None:
    clock = Clock()
    engine = checked_engine(postgres_url, clock)
    pid = marked_backend(engine)
    clock.now += idle
    with engine.connect():
        # No round trip before the statements unless the connection idled too long.
        assert (last_query(admin, pid) != MARK) is pinged
    engine.dispose()


@pytest.mark.parametrize("idle", [timedelta(0), PING_AFTER * 2])
def test_a_connection_killed_after_checkin_is_replaced_not_used(
    postgres_url: str, admin: psycopg.Connection[tuple[object, ...]], idle: timedelta
) -> None:
    # Inside the window, the socket tells; past it, the ping does.
    clock = Clock()
    engine = checked_engine(postgres_url, clock)
    killed = marked_backend(engine)
    terminate(admin, killed)
    clock.now += idle.total_seconds()
    with engine.connect() as connection:
        pid = connection.scalar(text("SELECT pg_backend_pid()"))
    assert pid != killed
    engine.dispose()


@pytest.mark.parametrize("pooler", ["", "?pooler=transaction"])
def test_the_outbox_engine_checks_its_connections_so(
    postgres_url: str, admin: psycopg.Connection[tuple[object, ...]], pooler: str
) -> None:
    engine = make_engine(postgres_url + pooler, isolation_level="AUTOCOMMIT")
    assert not engine.pool._pre_ping  # checked by check_before_use instead
    killed = marked_backend(engine)
    with engine.connect():  # checked in just now: no ping
        assert last_query(admin, killed) == MARK
    terminate(admin, killed)
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT pg_backend_pid()")) != killed
    engine.dispose()


def test_an_explicit_pre_ping_is_kept(postgres_url: str) -> None:
    assert make_engine(postgres_url, pool_pre_ping=True).pool._pre_ping
