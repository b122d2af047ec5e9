"""The operators' snapshot: one consistent reading while a drain runs, and due-only backlog age."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, text, update

from models import OutboxMessage
from tests.integration.ops.drain import draining, mixed
from worker.database import make_engine
from worker.ops.snapshot import Snapshot, take_snapshot

MESSAGES = 6_000
SNAPSHOTS = 150
CONTENT = '{"$type": "SMSProject", "projectId": 1}'


def _now() -> datetime:
    return datetime.now(UTC)


def fill(engine: Engine, count: int) -> None:
    """``count`` due pending rows spread over the three lanes, inserted in one statement."""
    rows = [{"cid": f"m{n}", "priority": n % 3, "content": CONTENT} for n in range(count)]
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox_messages (client_message_id, recipient, content, priority) "
                "VALUES (:cid, '46701234567', :content, :priority)"
            ),
            rows,
        )


def contradictions(snapshot: Snapshot, total: int) -> list[str]:
    """What in one snapshot disagrees with the rest of it (nothing, when it is one reading)."""
    figures = snapshot.figures
    counts = figures.by_status
    found = []
    if sum(counts.values()) != total:
        found.append(f"statuses add up to {sum(counts.values())}, not {total}")
    if figures.leases_in_flight + figures.expired_leases != counts["sending"]:
        found.append(
            f"sending={counts['sending']} but leases "
            f"{figures.leases_in_flight}+{figures.expired_leases}"
        )
    if figures.due_now > counts["pending"] + counts["sending"]:
        found.append(f"due now {figures.due_now} > pending + sending")
    if figures.retrying > counts["pending"]:
        found.append(f"retrying {figures.retrying} > pending {counts['pending']}")
    found += lane_contradictions(snapshot)
    return found


def lane_contradictions(snapshot: Snapshot) -> list[str]:
    figures = snapshot.figures
    lanes = figures.lanes
    found = []
    if sum(lane.pending for lane in lanes.values()) != figures.by_status["pending"]:
        found.append("lanes' pending do not add up to pending")
    if sum(lane.due for lane in lanes.values()) != figures.due_now:
        found.append("lanes' due do not add up to due now")
    for name, lane in lanes.items():
        if lane.due - lane.expired_leases + lane.scheduled != lane.pending:
            found.append(f"{name}: due {lane.due} + scheduled {lane.scheduled} != pending")
    return found


@pytest.fixture
def drained_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def test_every_snapshot_during_a_drain_is_one_consistent_reading(drained_engine: Engine) -> None:
    fill(drained_engine, MESSAGES)
    bad: list[str] = []
    taken = 0
    with draining(drained_engine, threads=2, batch=50, outcome=mixed) as drain:
        while taken < SNAPSHOTS:
            snapshot = take_snapshot(drained_engine, now=_now(), circuit_failures=5)
            taken += 1
            bad += contradictions(snapshot, MESSAGES)
    assert drain.claimed > MESSAGES / 2, "the drain must run during the snapshots"
    assert not bad, f"{len(bad)} contradictions in {taken} snapshots: {bad[:5]}"
    print(f"{taken} snapshots during a drain of {drain.claimed} claims: none contradicts itself")


def _set(engine: Engine, client_message_id: str, **values: Any) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(OutboxMessage)
            .where(OutboxMessage.client_message_id == client_message_id)
            .values(**values)
        )


def test_a_scheduled_message_does_not_age_the_backlog(drained_engine: Engine) -> None:
    fill(drained_engine, 3)  # m0 urgent, m1 normal, m2 bulk
    now = _now()
    _set(drained_engine, "m0", next_attempt_at=now + timedelta(hours=2))
    _set(drained_engine, "m1", next_attempt_at=now + timedelta(minutes=30))
    _set(
        drained_engine,
        "m2",
        next_attempt_at=now + timedelta(hours=2),
        created_at=now - timedelta(hours=5),
    )
    snapshot = take_snapshot(drained_engine, now=now, circuit_failures=5)
    assert snapshot.oldest_due_age is None
    assert snapshot.figures.due_now == 0
    lanes = snapshot.figures.lanes
    assert {name: lane.scheduled for name, lane in lanes.items()} == {
        "urgent": 1,
        "normal": 1,
        "bulk": 1,
    }
    assert lanes["normal"].next_due_at == now + timedelta(minutes=30)

    # Once due, a message ages from its due time, not from when it was created.
    later = now + timedelta(hours=2, minutes=10)
    snapshot = take_snapshot(drained_engine, now=later, circuit_failures=5)
    assert snapshot.oldest_due_age == timedelta(minutes=100)  # m1, due for 1h 40m
    assert lanes_age(snapshot) == {
        "urgent": timedelta(minutes=10),
        "normal": timedelta(minutes=100),
        "bulk": timedelta(minutes=10),
    }


def lanes_age(snapshot: Snapshot) -> dict[str, timedelta | None]:
    return {name: snapshot.due_age(lane) for name, lane in snapshot.figures.lanes.items()}


def add_history(engine: Engine, count: int) -> None:
    """``count`` accepted rows, made in one statement and analyzed as autovacuum would."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox_messages (client_message_id, recipient, content, status, "
                "attempts, tracking_id, accepted_at) "
                "SELECT 'h-' || g, '46701234567', CAST(:content AS jsonb), 'accepted', 1, "
                "md5(g::text), now() - interval '1 day' FROM generate_series(1, :count) AS g"
            ),
            {"content": CONTENT, "count": count},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE outbox_messages"))


def statements_of(engine: Engine, work: Any) -> list[tuple[str, Any]]:
    """Every SQL statement ``work`` sends, with its parameters."""
    sent: list[tuple[str, Any]] = []

    def capture(_c: object, _cur: object, statement: str, parameters: Any, *_: object) -> None:
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        work()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return sent


def test_the_snapshot_never_reads_the_history(postgres_engine: Engine) -> None:
    fill(postgres_engine, 300)
    add_history(postgres_engine, 100_000)
    with postgres_engine.begin() as connection:  # a few failed and cancelled rows
        connection.execute(
            text(
                "UPDATE outbox_messages SET status = 'failed', "
                "last_error = 'rejected: no' WHERE id % 1000 = 1"
            )
        )
        connection.execute(
            text("UPDATE outbox_messages SET status = 'cancelled' WHERE id % 1000 = 2")
        )
    sent = statements_of(
        postgres_engine,
        lambda: take_snapshot(postgres_engine, now=_now(), circuit_failures=5, reasons=5),
    )
    scans = []
    with postgres_engine.connect() as connection:
        for statement, parameters in sent:
            if "outbox_messages" not in statement or statement.lstrip().startswith("EXPLAIN"):
                continue
            plan = connection.exec_driver_sql("EXPLAIN " + statement, parameters).scalars().all()
            scans += [line for line in plan if "Seq Scan on outbox_messages" in line]
    assert not scans, scans


def test_a_large_history_is_counted_by_estimate_and_said_so(postgres_engine: Engine) -> None:
    fill(postgres_engine, 30)
    add_history(postgres_engine, 20_000)
    snapshot = take_snapshot(postgres_engine, now=_now(), circuit_failures=5, exact_below=5_000)
    assert snapshot.figures.estimated == {"accepted"}  # failed and cancelled: none, counted
    assert 16_000 < snapshot.figures.by_status["accepted"] < 24_000
    assert snapshot.figures.by_status["pending"] == 30  # the backlog is always exact
    assert snapshot.to_json()["estimated"] == ["accepted"]

    exact = take_snapshot(postgres_engine, now=_now(), circuit_failures=5, exact_below=None)
    assert exact.figures.estimated == set()
    assert exact.figures.by_status["accepted"] == 20_000
