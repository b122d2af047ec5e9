"""The low-latency wake-up: beat's watcher hears committed inserts, once per burst."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import TypeVar

import psycopg
import pytest
from sqlalchemy import Engine, text

from worker.runtime.wakeup import InsertListener, InsertWatcher, insert_watcher, psycopg_dsn
from worker.settings import Settings

W = TypeVar("W", bound=InsertWatcher)
INSERT = text(
    "INSERT INTO outbox_messages (client_message_id, recipient, content) "
    'VALUES (:id, \'46701234567\', \'{"$type": "SMSProject", "projectId": 1, "placeholders": []}\')'
)


def default_watcher(database_url: str) -> InsertWatcher:
    """What beat waits on, as the default settings choose it for ``database_url``."""
    settings = Settings.from_environ(
        {}, OUTBOX_DATABASE_URL=database_url, WIRAYA_BASE_URL="http://localhost:1"
    )
    watcher = insert_watcher(settings)
    assert watcher is not None
    return watcher


def listening(watcher: W) -> Iterator[W]:
    assert not watcher.wait(timedelta(milliseconds=50))  # connects and listens, nothing yet
    yield watcher
    watcher.close()


@pytest.fixture
def watcher(database_url: str) -> Iterator[InsertWatcher]:
    yield from listening(default_watcher(database_url))


@pytest.fixture
def listener(postgres_url: str) -> Iterator[InsertListener]:
    yield from listening(InsertListener(postgres_url))


def insert(engine: Engine, *ids: str) -> None:
    with engine.begin() as connection:
        for client_message_id in ids:
            connection.execute(INSERT, {"id": client_message_id})


def test_a_committed_insert_wakes_the_watcher_at_once(
    watcher: InsertWatcher, engine: Engine
) -> None:
    timer = threading.Timer(0.2, insert, (engine, "a"))
    timer.start()
    started = time.monotonic()
    assert watcher.wait(timedelta(seconds=10))
    waited = time.monotonic() - started
    timer.join()
    assert 0.15 < waited < 5  # woken by the insert, not by the timeout


def test_a_burst_of_inserts_wakes_once(watcher: InsertWatcher, engine: Engine) -> None:
    insert(engine, "a", "b")
    insert(engine, "c")
    # PostgreSQL hands notifications to the listening session asynchronously after each commit;
    # give both commits' notifications time to arrive so the burst is whole when wait() reads it.
    time.sleep(0.5)
    assert watcher.wait(timedelta(seconds=5))
    assert not watcher.wait(timedelta(milliseconds=200))  # the burst was consumed whole


def test_nothing_committed_means_no_wake_up(watcher: InsertWatcher, engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(INSERT, {"id": "rolled-back"})
        connection.rollback()
    assert not watcher.wait(timedelta(milliseconds=300))


def test_the_workers_own_updates_wake_nobody(watcher: InsertWatcher, engine: Engine) -> None:
    insert(engine, "a")
    assert watcher.wait(timedelta(seconds=5))
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE outbox_messages SET status = 'sending', attempts = 1, "
                "locked_until = updated_at"
            )
        )
    assert not watcher.wait(timedelta(milliseconds=300))


def test_a_dropped_connection_is_replaced(
    listener: InsertListener, postgres_url: str, postgres_engine: Engine
) -> None:
    assert listener.connection is not None
    backend = listener.connection.info.backend_pid
    with psycopg.connect(psycopg_dsn(postgres_url), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    assert not listener.wait(timedelta(milliseconds=200))  # fails once, as polling would
    assert not listener.wait(timedelta(milliseconds=50))  # listening again
    insert(postgres_engine, "after")
    assert listener.wait(timedelta(seconds=5))


@pytest.mark.parametrize(
    "unreachable",
    [
        "postgresql+psycopg://postgres@127.0.0.1:1/outbox",  # nothing listens on port 1
        "sqlite:////nonexistent-folder/outbox.db",
    ],
)
def test_a_database_that_is_down_is_waited_out_not_hammered(unreachable: str) -> None:
    watcher = default_watcher(unreachable)
    started = time.monotonic()
    assert not watcher.wait(timedelta(milliseconds=300))
    # Beat comes straight back after each wait: returning early would spin on the error.
    assert time.monotonic() - started >= 0.29
    watcher.close()


def pooled_settings(database_url: str, **environ: str) -> Settings:
    """Settings whose database URL goes through a transaction pooler (``?pooler=transaction``)."""
    return Settings.from_environ(
        {"WIRAYA_BASE_URL": "http://localhost:1", **environ},
        OUTBOX_DATABASE_URL=database_url + "?pooler=transaction",
    )


def test_behind_a_transaction_pooler_beat_listens_on_the_listen_url(
    postgres_url: str, postgres_engine: Engine
) -> None:
    watcher = insert_watcher(pooled_settings(postgres_url, OUTBOX_LISTEN_URL=postgres_url))
    assert isinstance(watcher, InsertListener)
    assert watcher.dsn == psycopg_dsn(postgres_url)
    for listening_watcher in listening(watcher):
        insert(postgres_engine, "through-the-pooler")
        assert listening_watcher.wait(timedelta(seconds=5))


def test_behind_a_transaction_pooler_without_a_listen_url_beat_polls_and_says_so(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="worker.runtime.wakeup"):
        assert insert_watcher(pooled_settings(postgres_url)) is None
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "polling every 1 s: set OUTBOX_LISTEN_URL" in record.getMessage()
