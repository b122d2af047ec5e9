"""Rows written before 0010 that no worker could move: repaired in short batches, then refused.

Migration 0010 adds two CHECK constraints (SQLite: triggers) and first repairs the rows already
breaking them. On PostgreSQL the repair runs beside a live application: a few rows per short
transaction, each batch safe to interrupt.
"""

from __future__ import annotations

from contextlib import suppress

import pytest
from alembic import command
from sqlalchemy import Engine, text

from tests.conftest import alembic_config
from tests.integration.migrations.watch import (
    Interrupt,
    Interrupted,
    LockWatch,
    interrupting,
    watching,
)
from worker.database import make_engine
from worker.ops import online_ddl

BEFORE = "0009_reach_evidence"
REVISION = "0010_raw_sql_rows"
BROKEN = 5  # of each kind: more than two batches of two
INSERT = text(
    "INSERT INTO outbox_messages (client_message_id, recipient, content, status, "
    "locked_until, tracking_id) "
    """VALUES (:id, '46701234567', '{"$type": "SMSProject", "projectId": 1}', :status, """
    ":locked_until, :tracking_id)"
)
CONSTRAINTS = """
SELECT conname, convalidated FROM pg_constraint
WHERE conrelid = 'outbox_messages'::regclass
  AND conname IN ('ck_outbox_messages_sending_lease', 'ck_outbox_messages_accepted_tracking_id')
ORDER BY conname
"""


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two rows a batch, each statement sent on its own (so the watch sees each)."""
    monkeypatch.setattr(online_ddl, "BATCH_ROWS", 2)
    monkeypatch.setattr(online_ddl, "ONE_ROUND_TRIP", False)


def write_broken_rows(engine: Engine) -> None:
    """BROKEN sending rows without a lease, BROKEN accepted ones without a tracking id, and
    one of each kind that is sound."""
    rows = [
        *({"status": "sending", "locked_until": None, "tracking_id": None} for _ in range(BROKEN)),
        *({"status": "accepted", "locked_until": None, "tracking_id": None} for _ in range(BROKEN)),
        {"status": "sending", "locked_until": "2026-12-07 06:00:00+00", "tracking_id": None},
        {"status": "accepted", "locked_until": None, "tracking_id": "a" * 32},
    ]
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM outbox_messages"))
        for number, row in enumerate(rows):
            connection.execute(INSERT, {"id": f"raw-{number}", **row})


def statuses(engine: Engine) -> dict[str, int]:
    """How many rows of each kind there are: broken ones, repaired ones, sound ones."""
    query = """
        SELECT CASE
            WHEN status = 'sending' AND locked_until IS NULL THEN 'sending without a lease'
            WHEN status = 'accepted' AND tracking_id IS NULL THEN 'accepted without tracking id'
            WHEN status = 'failed' AND last_error LIKE 'invalid: accepted without%'
                THEN 'failed by the repair'
            ELSE status END, count(*)
        FROM outbox_messages GROUP BY 1"""
    with engine.connect() as connection:
        return {kind: count for kind, count in connection.execute(text(query))}


REPAIRED = {"sending": BROKEN + 1, "failed by the repair": BROKEN, "accepted": 1}


def constraints(engine: Engine) -> list[tuple[str, bool]]:
    with engine.connect() as connection:
        return [(name, valid) for name, valid in connection.execute(text(CONSTRAINTS))]


VALIDATED = [
    ("ck_outbox_messages_accepted_tracking_id", True),
    ("ck_outbox_messages_sending_lease", True),
]


def test_rows_no_worker_could_move_are_repaired(empty_url: str, empty_engine: Engine) -> None:
    config = alembic_config(empty_url)
    command.upgrade(config, BEFORE)
    write_broken_rows(empty_engine)
    command.upgrade(config, REVISION)
    assert statuses(empty_engine) == REPAIRED
    if empty_engine.dialect.name == "postgresql":
        assert constraints(empty_engine) == VALIDATED


@pytest.mark.usefixtures("small_batches")
def test_the_repair_changes_rows_only_in_short_transactions(empty_postgres_url: str) -> None:
    config = alembic_config(empty_postgres_url)
    command.upgrade(config, BEFORE)
    engine = make_engine(empty_postgres_url)
    try:
        write_broken_rows(engine)
        watch = LockWatch(REVISION, {"outbox_messages"})
        with watching(watch):
            command.upgrade(config, REVISION)
        assert watch.breaches == []
        assert statuses(engine) == REPAIRED
    finally:
        engine.dispose()


@pytest.mark.usefixtures("small_batches")
def test_a_repair_interrupted_between_batches_finishes_when_run_again(
    empty_postgres_url: str,
) -> None:
    config = alembic_config(empty_postgres_url)
    command.upgrade(config, BEFORE)
    engine = make_engine(empty_postgres_url)
    try:
        for point in range(1, 1000):
            write_broken_rows(engine)
            with interrupting(Interrupt(point)) as interrupt, suppress(Interrupted):
                command.upgrade(config, REVISION)
            if interrupt.statement is None:
                break  # the whole migration ran: every point has been tried
            command.upgrade(config, REVISION)
            assert (statuses(engine), constraints(engine)) == (REPAIRED, VALIDATED), (
                f"interrupted before `{interrupt.statement}` and run again"
            )
            command.downgrade(config, BEFORE)
        assert point > 2 * (BROKEN // 2 + 1), "fewer interruption points than batches"
    finally:
        engine.dispose()
