"""The outbox's SQL statements on their own: claim, the record guard, prune, count and the gate.

Each runs on PostgreSQL and SQLite unless it is about something only PostgreSQL has (row locks,
the planner). Time is always passed in, so leases end by moving ``now``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event, insert, select, text

from models import Status
from models.outbox import outbox_messages as outbox
from tests.integration.dispatch.harness import outbox_statements
from worker.dispatch import claim as claims
from worker.dispatch import gate as gates
from worker.dispatch import record as records
from worker.dispatch.record import RowResult
from worker.ops import queries

NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
LEASE = timedelta(seconds=30)
CONTENT = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "hi"}


def add_rows(engine: Engine, count: int, prefix: str = "m", **values: Any) -> list[int]:
    """Insert ``count`` rows (any column may be set, e.g. status) and return their ids."""
    rows = [
        {"client_message_id": f"{prefix}{n}", "recipient": "46705000000", "content": CONTENT}
        | values
        for n in range(count)
    ]
    with engine.begin() as connection:
        return list(connection.scalars(insert(outbox).values(rows).returning(outbox.c.id)))


def statuses(engine: Engine) -> dict[int, tuple[str, int]]:
    with engine.connect() as connection:
        rows = connection.execute(select(outbox.c.id, outbox.c.status, outbox.c.attempts))
        return {row.id: (row.status, row.attempts) for row in rows}


def claim(engine: Engine, now: datetime, limit: int = 10) -> list[claims.ClaimedRow]:
    with engine.begin() as connection:
        return claims.claim(connection, limit=limit, lease=LEASE, now=now)


def accepted(row: claims.ClaimedRow, tracking_id: str) -> RowResult:
    return RowResult(
        id=row.id,
        claimed_attempts=row.attempts,
        status=Status.ACCEPTED,
        attempts=row.attempts,
        tracking_id=tracking_id,
    )


def released(row: claims.ClaimedRow, until: datetime) -> RowResult:
    return RowResult(
        id=row.id,
        claimed_attempts=row.attempts,
        status=Status.PENDING,
        attempts=row.attempts - 1,
        next_attempt_at=until,
        last_error="ServerError: HTTP 503",
    )


# -- claim ----------------------------------------------------------------------------------


def test_claim_takes_due_rows_oldest_first_under_a_lease(engine: Engine) -> None:
    due = add_rows(engine, 3, next_attempt_at=NOW - timedelta(seconds=10))
    later = add_rows(engine, 2, prefix="later", next_attempt_at=NOW + timedelta(seconds=10))
    add_rows(engine, 1, prefix="done", status=Status.ACCEPTED, next_attempt_at=NOW)

    rows = claim(engine, NOW, limit=2)

    assert [row.id for row in rows] == due[:2]
    assert {row.attempts for row in rows} == {1}
    with engine.connect() as connection:
        leased = connection.execute(
            select(outbox.c.id, outbox.c.locked_until).where(outbox.c.status == Status.SENDING)
        ).all()
    assert sorted(leased) == [(due[0], NOW + LEASE), (due[1], NOW + LEASE)]
    assert [row.id for row in claim(engine, NOW)] == [due[2]]
    assert claim(engine, NOW) == []
    assert [row.id for row in claim(engine, NOW + timedelta(seconds=10))] == later


def test_claim_takes_back_rows_whose_lease_ended(engine: Engine) -> None:
    [row_id] = add_rows(engine, 1, next_attempt_at=NOW)
    assert [row.attempts for row in claim(engine, NOW)] == [1]

    assert claim(engine, NOW + LEASE - timedelta(microseconds=1)) == []
    [again] = claim(engine, NOW + LEASE)

    assert (again.id, again.attempts) == (row_id, 2)


def test_concurrent_claims_skip_each_others_rows(postgres_engine: Engine) -> None:
    add_rows(postgres_engine, 6, next_attempt_at=NOW)
    with postgres_engine.connect() as first, postgres_engine.connect() as second, first.begin():
        taken_first = claims.claim(first, limit=4, lease=LEASE, now=NOW)
        # The first transaction still holds its row locks: the second skips them
        # instead of waiting or taking the same rows.
        with second.begin():
            # Without SKIP LOCKED this would wait for the first transaction: fail instead.
            second.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            taken_second = claims.claim(second, limit=4, lease=LEASE, now=NOW)

    first_ids = {row.id for row in taken_first}
    second_ids = {row.id for row in taken_second}
    assert len(first_ids) == 4 and len(second_ids) == 2
    assert not first_ids & second_ids


# -- record and its guard -------------------------------------------------------------------


def test_record_writes_a_whole_batch_in_one_statement(engine: Engine) -> None:
    add_rows(engine, 3, next_attempt_at=NOW)
    ok, retry, gone = claim(engine, NOW)
    results = [
        accepted(ok, "a" * 32),
        RowResult(
            id=retry.id,
            claimed_attempts=1,
            status=Status.PENDING,
            attempts=1,
            next_attempt_at=NOW + timedelta(seconds=7),
            last_error="transient",
        ),
        RowResult(
            id=gone.id, claimed_attempts=1, status=Status.FAILED, attempts=1, last_error="no"
        ),
    ]
    with outbox_statements(engine) as statements, engine.begin() as connection:
        written = records.record(connection, results, now=NOW)
    assert len(statements) == 1
    assert written == {ok.id, retry.id, gone.id}
    with engine.connect() as connection:
        rows = {row.id: row for row in connection.execute(select(outbox))}
    assert (rows[ok.id].status, rows[ok.id].tracking_id) == ("accepted", "a" * 32)
    assert rows[ok.id].accepted_at == NOW and rows[ok.id].locked_until is None
    assert (rows[retry.id].status, rows[retry.id].attempts) == ("pending", 1)
    assert rows[retry.id].next_attempt_at == NOW + timedelta(seconds=7)
    assert (rows[gone.id].status, rows[gone.id].last_error) == ("failed", "no")


def test_a_stale_claim_cannot_overwrite_a_newer_one(engine: Engine) -> None:
    add_rows(engine, 2, next_attempt_at=NOW)
    stale = claim(engine, NOW)
    later = NOW + LEASE
    newer = claim(engine, later)  # the stale worker's lease ended: another worker took over
    assert [row.attempts for row in newer] == [2, 2]

    with engine.begin() as connection:
        assert records.record(connection, [accepted(newer[0], "b" * 32)], now=later) == {
            newer[0].id
        }
        assert records.record(connection, [released(newer[1], later)], now=later) == {newer[1].id}
        # The stale worker's results arrive last: neither the accepted nor the
        # released-to-pending row may change, whatever the stale worker says.
        late = [released(stale[0], later), accepted(stale[1], "c" * 32)]
        assert records.record(connection, late, now=later) == set()

    assert statuses(engine) == {newer[0].id: ("accepted", 2), newer[1].id: ("pending", 1)}
    with engine.connect() as connection:
        tracking = connection.scalar(select(outbox.c.tracking_id).where(outbox.c.id == newer[0].id))
    assert tracking == "b" * 32


# -- count_due ------------------------------------------------------------------------------


def test_count_due_counts_due_and_lease_ended_rows_up_to_the_cap(engine: Engine) -> None:
    add_rows(engine, 5, next_attempt_at=NOW)
    add_rows(engine, 3, prefix="later", next_attempt_at=NOW + timedelta(hours=1))
    add_rows(engine, 2, prefix="done", status=Status.FAILED, next_attempt_at=NOW)
    claim(engine, NOW, limit=2)  # two of the due rows, leased until NOW + LEASE

    with engine.connect() as connection:
        assert claims.count_due(connection, now=NOW, cap=100) == 3
        assert claims.count_due(connection, now=NOW + LEASE, cap=100) == 5
        assert claims.count_due(connection, now=NOW + LEASE, cap=4) == 4
        assert claims.count_due(connection, now=NOW + timedelta(hours=1), cap=100) == 8


# -- prune --------------------------------------------------------------------------------------


def test_prune_deletes_only_old_accepted_rows_in_chunks(engine: Engine) -> None:
    old, recent = NOW - timedelta(days=40), NOW - timedelta(days=1)
    add_rows(engine, 7, prefix="old-accepted", status=Status.ACCEPTED, accepted_at=old)
    kept = add_rows(engine, 3, prefix="new-accepted", status=Status.ACCEPTED, accepted_at=recent)
    kept += add_rows(engine, 2, prefix="old-failed", status=Status.FAILED, created_at=old)
    kept += add_rows(engine, 2, prefix="old-pending", created_at=old, next_attempt_at=old)
    kept += add_rows(engine, 1, prefix="old-cancelled", status=Status.CANCELLED, created_at=old)
    cutoff = NOW - timedelta(days=30)

    deleted: list[int] = []
    with engine.begin() as connection:
        while not deleted or deleted[-1] == 3:
            deleted.append(
                queries.prune_finished(connection, status=Status.ACCEPTED, cutoff=cutoff, chunk=3)
            )

    assert deleted == [3, 3, 1]
    assert sorted(statuses(engine)) == sorted(kept)


# -- the claim's index -------------------------------------------------------------------------


def test_the_claim_reads_the_partial_index_on_a_large_table(postgres_engine: Engine) -> None:
    with postgres_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox_messages "
                "(client_message_id, recipient, content, status, attempts, tracking_id, "
                " accepted_at) "
                "SELECT 'old-' || n, '46705000000', CAST(:content AS jsonb), 'accepted', 1, "
                "       md5(n::text), now() - interval '1 day' "
                "FROM generate_series(1, 50000) AS n"
            ),
            {"content": '{"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "hi"}'},
        )
    add_rows(postgres_engine, 5, prefix="due", next_attempt_at=NOW)
    with postgres_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("ANALYZE outbox_messages")

    captured: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        captured.append((args[2], args[3]))

    with postgres_engine.connect() as connection:
        event.listen(connection, "before_cursor_execute", capture)
        with connection.begin() as transaction:
            assert len(claims.claim(connection, limit=100, lease=LEASE, now=NOW)) == 5
            transaction.rollback()
        event.remove(connection, "before_cursor_execute", capture)
        [(statement, parameters)] = captured
        plan = "\n".join(connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars())

    assert "ix_outbox_messages_due" in plan, plan
    assert "ix_outbox_messages_lease" in plan, plan
    assert "Seq Scan on outbox_messages" not in plan, plan


# -- the gate ------------------------------------------------------------------------------------


def gate(engine: Engine) -> gates.Gate:
    with engine.begin() as connection:
        return gates.read_gate(connection)


def test_a_new_gate_is_open(engine: Engine) -> None:
    state = gate(engine)
    assert state == gates.Gate(
        paused_until=None,
        failures=0,
        reason=None,
        batch_limit=None,
        refused_key=None,
        spacing=timedelta(0),
    )


def test_a_failure_never_shortens_a_pause_and_a_429_is_not_counted(engine: Engine) -> None:
    gate(engine)
    with engine.begin() as connection:
        gates.note_failure(
            connection, now=NOW, paused_until=NOW + timedelta(seconds=60), reason="a"
        )
        gates.note_failure(
            connection, now=NOW, paused_until=NOW + timedelta(seconds=10), reason="b"
        )
        gates.note_failure(
            connection,
            now=NOW,
            paused_until=NOW + timedelta(seconds=5),
            reason="429",
            spacing=timedelta(milliseconds=50),
            counts=False,
        )
    state = gate(engine)
    assert state.paused_until == NOW + timedelta(seconds=60)
    assert (state.failures, state.reason, state.spacing) == (2, "429", timedelta(milliseconds=50))

    with engine.begin() as connection:
        gates.note_success(connection, now=NOW, spacing=timedelta(0))
    assert gate(engine) == gates.Gate(None, 0, None, None, None, timedelta(0))


def test_the_batch_limit_only_shrinks(engine: Engine) -> None:
    gate(engine)
    for size, expected in ((50, 50), (80, 50), (20, 20)):
        with engine.begin() as connection:
            gates.limit_batch_size(connection, size=size, now=NOW)
        assert gate(engine).batch_limit == expected


def test_one_probe_per_hold(engine: Engine) -> None:
    gate(engine)
    hold = timedelta(seconds=10)
    with engine.begin() as connection:
        assert gates.take_probe(connection, now=NOW, hold=hold)
        assert not gates.take_probe(connection, now=NOW, hold=hold)
        assert not gates.take_probe(connection, now=NOW + hold / 2, hold=hold)
        assert gates.take_probe(connection, now=NOW + hold, hold=hold)


def test_send_slots_are_spaced_for_every_worker(engine: Engine) -> None:
    gate(engine)
    spacing = timedelta(milliseconds=200)
    with engine.begin() as connection:
        slots = [gates.reserve_send_slot(connection, now=NOW, spacing=spacing) for _ in range(3)]
        late = gates.reserve_send_slot(connection, now=NOW + timedelta(seconds=5), spacing=spacing)
    assert slots == [NOW, NOW + spacing, NOW + 2 * spacing]
    assert late == NOW + timedelta(seconds=5)


def test_reset_clears_every_pause_and_limit(engine: Engine) -> None:
    with engine.begin() as connection:
        gates.read_gate(connection)
        gates.note_failure(
            connection,
            now=NOW,
            paused_until=NOW + timedelta(hours=1),
            reason="Unauthorized",
            refused_key="abc",
            spacing=timedelta(seconds=1),
        )
        gates.limit_batch_size(connection, size=3, now=NOW)
        gates.reset_gate(connection, now=NOW)
    assert gate(engine) == gates.Gate(None, 0, None, None, None, timedelta(0))
