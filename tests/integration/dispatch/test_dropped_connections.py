"""Pooled connections killed under a dispatcher on PostgreSQL: no message lost, none sent twice.

The pool hands out a connection checked in a moment ago without a ping (models/databases/
liveness.py): one whose backend was terminated meanwhile must still never fail a statement.
"""

from __future__ import annotations

import psycopg
import pytest

from models import Status
from tests.integration.dispatch.harness import Outbox, WhileSending
from worker.dispatch.summary import BatchState, BatchSummary
from worker.ops.processes import wait_for
from worker.runtime.wakeup import psycopg_dsn

pytestmark = pytest.mark.postgres

OTHERS = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"


def kill_every_connection(outbox: Outbox) -> int:
    """Terminate every other backend of the test database and wait until they are gone."""
    with psycopg.connect(psycopg_dsn(outbox.url), autocommit=True) as admin:
        row = admin.execute(f"SELECT count(pg_terminate_backend(pid)) {OTHERS}").fetchone()
        left = f"SELECT count(*) {OTHERS} AND backend_type = 'client backend'"
        wait_for(lambda: admin.execute(left).fetchone() == (0,), timeout=5, what="the kills")
    return int(row[0]) if row else 0


def assert_each_sent_once_and_accepted(outbox: Outbox, ids: list[str]) -> None:
    ledger = outbox.sandbox.ledger()
    assert sorted(ledger) == sorted(ids)
    assert {entry.times_received for entry in ledger.values()} == {1}
    assert {row.status for row in outbox.rows().values()} == {Status.ACCEPTED}


def test_connections_killed_between_batches_cost_no_message(pg_outbox: Outbox) -> None:
    ids = pg_outbox.enqueue_ordinary(30)
    dispatcher = pg_outbox.dispatcher()
    assert dispatcher.dispatch_once().claimed == 10
    assert kill_every_connection(pg_outbox) >= 1  # the pool's, checked in just now
    summaries = pg_outbox.drain(dispatcher)
    assert [summary.claimed for summary in summaries] == [10, 10]
    assert_each_sent_once_and_accepted(pg_outbox, ids)


def test_connections_killed_during_the_request_cost_no_record(pg_outbox: Outbox) -> None:
    # The claim's connection went back to the pool before the request; the gate's note and the
    # record after the answer must not meet it dead (the batch would come back after its lease).
    ids = pg_outbox.enqueue_ordinary(10)
    dispatcher = pg_outbox.dispatcher()
    killed: list[int] = []

    def kill() -> BatchSummary:
        killed.append(kill_every_connection(pg_outbox))
        return BatchSummary()

    dispatcher.sender = WhileSending(dispatcher.sender, kill)
    summary = dispatcher.dispatch_once()
    assert killed and killed[0] >= 1
    assert summary.state is BatchState.SENT and summary.alarm is None
    assert_each_sent_once_and_accepted(pg_outbox, ids)
