"""Every process does its job on real PostgreSQL under exactly the role `outbox grants` gives it.

The worker's dispatch (claim, send, record, gate) against the sandbox, beat's housekeeping and
prune, the receiver's storing and matching, the CLI's reads and changes, the Python producer
(sync and async) and a plain-SQL INSERT: each runs connected as its own role and nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from models import DuplicateMessage, Status, aenqueue, enqueue, enqueue_many
from sandbox.testing import RunningSandbox, running_sandbox
from tests.integration.dispatch.harness import ALPHA, Outbox, recipient
from tests.integration.roles.conftest import as_role
from worker.database import make_engine
from worker.dispatch.claim import claim, new_token
from worker.dispatch.gate import read_gate
from worker.dispatch.record import RowResult, record
from worker.ops.cli import main
from worker.ops.metrics import registry_for
from worker.ops.privileges import Role
from worker.reports.parsing import Report
from worker.reports.storage import store_reports
from worker.runtime.housekeeping import PRUNE, Housekeeping
from worker.settings import DatabaseSettings, OperatorSettings

EngineOf = Callable[[Role], Engine]
TRACKING = "7" * 32


@pytest.fixture
def sandbox() -> Iterator[RunningSandbox]:
    with running_sandbox(seed=3) as running:
        yield running


def produce(engine: Engine, count: int) -> list[str]:
    """``count`` ordinary messages through enqueue_many (under whichever role ``engine`` is)."""
    messages = [
        {"recipient": recipient(number), "content": ALPHA, "client_message_id": f"m{number}"}
        for number in range(count)
    ]
    with Session(engine) as session, session.begin():
        return enqueue_many(session, messages)


def statuses(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT client_message_id, status FROM outbox_messages"))
        return {row[0]: row[1] for row in rows}


def test_the_worker_dispatches_under_its_role_and_sends_each_message_once(
    role_engine: EngineOf, sandbox: RunningSandbox
) -> None:
    ids = produce(role_engine("producer"), 5)
    outbox = Outbox(role_engine("worker"), sandbox)
    try:
        summary = outbox.dispatcher().dispatch_once()
    finally:
        outbox.close()
    assert summary.accepted == 5
    assert statuses(role_engine("operator")) == dict.fromkeys(ids, Status.ACCEPTED.value)
    assert [sandbox.ledger()[i].times_received for i in ids] == [1] * 5


def test_an_early_report_is_matched_by_the_workers_record_without_rights_on_reports(
    role_engine: EngineOf,
) -> None:
    (sent,) = produce(role_engine("producer"), 1)
    now = datetime.now(UTC)
    early = Report(tracking_id=TRACKING, status="DELIVERED", done_at=now, raw='{"early": 1}')
    store_reports(role_engine("receiver"), [early], received_at=now)
    worker = role_engine("worker")
    token = new_token()
    with worker.begin() as connection:
        version = read_gate(connection).version
        (row,) = claim(
            connection, limit=1, lease=timedelta(seconds=30), now=now, version=version, token=token
        )
        result = RowResult(row.id, Status.ACCEPTED, row.attempts, tracking_id=TRACKING)
        assert record(connection, [result], token=token, now=now) == {row.id}
    with role_engine("operator").connect() as connection:
        status = connection.scalar(text("SELECT delivery_status FROM outbox_messages"))
    assert status == "DELIVERED", sent


def test_beat_runs_its_housekeeping_and_prune_under_the_workers_role(
    role_engine: EngineOf,
) -> None:
    produce(role_engine("producer"), 2)
    long_ago = datetime.now(UTC) - timedelta(days=90)
    with role_engine("worker").begin() as connection:
        connection.execute(
            text(
                "UPDATE outbox_messages SET status = 'accepted', accepted_at = :at, "
                "tracking_id = :tracking WHERE client_message_id = 'm0'"
            ),
            {"at": long_ago, "tracking": TRACKING},
        )
    beat = Housekeeping(role_engine("worker"), DatabaseSettings.from_environ({}))
    now = datetime.now(UTC)
    assert beat.take_due(PRUNE, now=now)
    assert beat.prune(now=now) == 1
    beat.finish(PRUNE, now=now)
    assert statuses(role_engine("operator")) == {"m1": Status.PENDING.value}


def test_the_receiver_stores_and_matches_reports_under_its_role(role_engine: EngineOf) -> None:
    produce(role_engine("producer"), 1)
    with role_engine("worker").begin() as connection:
        connection.execute(
            text("UPDATE outbox_messages SET status = 'accepted', tracking_id = :tracking"),
            {"tracking": TRACKING},
        )
    now = datetime.now(UTC)
    reports = [
        Report(tracking_id=TRACKING, status="DELIVERED", done_at=now, raw="{}"),
        Report(tracking_id="8" * 32, status="DELIVERED", done_at=now, raw="{}"),
    ]
    stored = store_reports(role_engine("receiver"), reports, received_at=now)
    assert (stored.matched, stored.unmatched, stored.updated) == (1, 1, 1)


def test_the_cli_reads_and_changes_under_the_operators_role(
    granted_url: str, role_engine: EngineOf, capsys: pytest.CaptureFixture[str]
) -> None:
    produce(role_engine("producer"), 3)
    with role_engine("worker").begin() as connection:
        connection.execute(
            text("UPDATE outbox_messages SET status = 'failed' WHERE client_message_id = 'm0'")
        )
    url = ["--database-url", as_role(granted_url, "operator")]
    assert main([*url, "stats", "--json"]) == 0
    assert main([*url, "inspect", "m1"]) == 0
    assert main([*url, "retry", "m0", "--yes"]) == 0
    assert main([*url, "cancel", "m2", "--yes"]) == 0
    assert main([*url, "prune", "--older-than", "1d", "--status", "cancelled", "--yes"]) == 0
    assert main([*url, "resume"]) == 0
    assert "permission denied" not in capsys.readouterr().err
    assert statuses(role_engine("operator")) == {
        "m0": Status.PENDING.value,
        "m1": Status.PENDING.value,
        "m2": Status.CANCELLED.value,
    }


def test_the_python_producer_enqueues_under_its_role(role_engine: EngineOf) -> None:
    producer = role_engine("producer")
    with Session(producer) as session, session.begin():
        row = enqueue(session, recipient=recipient(1), content=ALPHA, client_message_id="one")
        assert (row.id, row.status, row.recipient) == (1, Status.PENDING.value, recipient(1))
    with Session(producer) as session, session.begin():
        again = enqueue(
            session,
            recipient=recipient(1),
            content=ALPHA,
            client_message_id="one",
            if_exists="return",
        )
        assert (again.id, again.content) == (1, ALPHA)
    with Session(producer) as session, session.begin(), pytest.raises(DuplicateMessage):
        enqueue(
            session,
            recipient=recipient(2),
            content=ALPHA,
            client_message_id="one",
            if_exists="return",
        )
    assert produce(producer, 3) == ["m0", "m1", "m2"]


def test_the_async_producer_enqueues_under_its_role(granted_url: str) -> None:
    async def scenario() -> tuple[int, str]:
        engine = create_async_engine(as_role(granted_url, "producer"))
        try:
            async with AsyncSession(engine) as session, session.begin():
                row = await aenqueue(session, recipient=recipient(1), content=ALPHA)
                return row.id, row.status
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == (1, Status.PENDING.value)


def test_a_plain_sql_insert_works_under_the_producers_role(role_engine: EngineOf) -> None:
    with role_engine("producer").begin() as connection:
        new_id = connection.scalar(
            text(
                "INSERT INTO outbox_messages (client_message_id, recipient, content) "
                "VALUES ('raw', '46701234567', CAST(:content AS jsonb)) RETURNING id"
            ),
            {"content": '{"$type": "SMSProject", "projectId": 1}'},
        )
    assert new_id == 1


def test_the_metrics_are_read_under_their_role_on_a_fresh_outbox(granted_url: str) -> None:
    engine = make_engine(as_role(granted_url, "metrics"))
    try:
        settings = OperatorSettings.from_environ({}, OUTBOX_DATABASE_URL=granted_url)
        scraped = generate_latest(registry_for(engine, settings)).decode()
    finally:
        engine.dispose()
    assert "outbox_" in scraped
