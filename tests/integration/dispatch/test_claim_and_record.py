"""The outbox's SQL statements on their own: claim, the record guard, prune and count.

Each runs on PostgreSQL and SQLite unless it is about something only PostgreSQL has (row locks,
the planner). Time is always passed in, so leases end by moving ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, event, insert, select, text, update

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


@dataclass(frozen=True)
class Claim:
    """A claimed batch and the token its record must show."""

    rows: list[claims.ClaimedRow]
    token: int

    @property
    def ids(self) -> list[int]:
        return [row.id for row in self.rows]


def gate_version(connection: Connection) -> int:
    return gates.read_gate(connection).version


def claim(engine: Engine, now: datetime, limit: int = 10) -> Claim:
    token = claims.new_token()
    with engine.begin() as connection:
        version = gate_version(connection)
        rows = claims.claim(
            connection, limit=limit, lease=LEASE, now=now, version=version, token=token
        )
    return Claim(rows, token)


def record(engine: Engine, batch: Claim, results: list[RowResult], now: datetime) -> set[int]:
    with engine.begin() as connection:
        return records.record(connection, results, token=batch.token, now=now)


def accepted(row: claims.ClaimedRow, tracking_id: str) -> RowResult:
    return RowResult(row.id, Status.ACCEPTED, row.attempts, tracking_id=tracking_id)


def released(row: claims.ClaimedRow, until: datetime) -> RowResult:
    return RowResult(
        row.id,
        Status.PENDING,
        row.attempts - 1,
        next_attempt_at=until,
        last_error="ServerError: HTTP 503",
    )


# -- claim ----------------------------------------------------------------------------------


def test_claim_takes_due_rows_oldest_first_under_a_lease(engine: Engine) -> None:
    due = add_rows(engine, 3, next_attempt_at=NOW - timedelta(seconds=10))
    later = add_rows(engine, 2, prefix="later", next_attempt_at=NOW + timedelta(seconds=10))
    add_rows(
        engine, 1, prefix="done", status=Status.ACCEPTED, tracking_id="a" * 32, next_attempt_at=NOW
    )

    rows = claim(engine, NOW, limit=2).rows

    assert [row.id for row in rows] == due[:2]
    assert {row.attempts for row in rows} == {1}
    with engine.connect() as connection:
        leased = connection.execute(
            select(outbox.c.id, outbox.c.locked_until).where(outbox.c.status == Status.SENDING)
        ).all()
    assert sorted(leased) == [(due[0], NOW + LEASE), (due[1], NOW + LEASE)]
    assert claim(engine, NOW).ids == [due[2]]
    assert claim(engine, NOW).ids == []
    assert claim(engine, NOW + timedelta(seconds=10)).ids == later


def test_claim_takes_back_rows_whose_lease_ended(engine: Engine) -> None:
    [row_id] = add_rows(engine, 1, next_attempt_at=NOW)
    assert [row.attempts for row in claim(engine, NOW).rows] == [1]

    assert claim(engine, NOW + LEASE - timedelta(microseconds=1)).rows == []
    [again] = claim(engine, NOW + LEASE).rows

    assert (again.id, again.attempts) == (row_id, 2)


def test_concurrent_claims_skip_each_others_rows(postgres_engine: Engine) -> None:
    add_rows(postgres_engine, 6, next_attempt_at=NOW)
    with postgres_engine.begin() as connection:
        version = gate_version(connection)  # the gate row exists before either claim
    with postgres_engine.connect() as first, postgres_engine.connect() as second, first.begin():
        taken_first = claims.claim(first, limit=4, lease=LEASE, now=NOW, version=version, token=1)
        # The first transaction still holds its row locks: the second skips them
        # instead of waiting or taking the same rows.
        with second.begin():
            # Without SKIP LOCKED this would wait for the first transaction: fail instead.
            second.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            taken_second = claims.claim(
                second, limit=4, lease=LEASE, now=NOW, version=version, token=2
            )

    first_ids = {row.id for row in taken_first}
    second_ids = {row.id for row in taken_second}
    assert len(first_ids) == 4 and len(second_ids) == 2
    assert not first_ids & second_ids


# -- record and its guard -------------------------------------------------------------------


def test_record_writes_a_whole_batch_in_one_statement(engine: Engine) -> None:
    add_rows(engine, 3, next_attempt_at=NOW)
    batch = claim(engine, NOW)
    ok, retry, gone = batch.rows
    results = [
        accepted(ok, "a" * 32),
        RowResult(
            retry.id,
            Status.PENDING,
            1,
            next_attempt_at=NOW + timedelta(seconds=7),
            last_error="transient",
        ),
        RowResult(gone.id, Status.FAILED, 1, last_error="no"),
    ]
    with outbox_statements(engine) as statements:
        written = record(engine, batch, results, NOW)
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
    assert [row.attempts for row in newer.rows] == [2, 2]

    assert record(engine, newer, [accepted(newer.rows[0], "b" * 32)], later) == {newer.ids[0]}
    assert record(engine, newer, [released(newer.rows[1], later)], later) == {newer.ids[1]}
    # The stale worker's results arrive last: neither the accepted nor the
    # released-to-pending row may change, whatever the stale worker says.
    late = [released(stale.rows[0], later), accepted(stale.rows[1], "c" * 32)]
    assert record(engine, stale, late, later) == set()

    assert statuses(engine) == {newer.ids[0]: ("accepted", 2), newer.ids[1]: ("pending", 1)}
    with engine.connect() as connection:
        tracking = connection.scalar(
            select(outbox.c.tracking_id).where(outbox.c.id == newer.ids[0])
        )
    assert tracking == "b" * 32


def test_a_stale_record_cannot_overwrite_a_claim_after_an_operator_retry(engine: Engine) -> None:
    # An attempt count repeats: `outbox retry` sets it back to 0, so a row failed, retried and
    # claimed again holds the attempt number of its first claim. The token never repeats.
    add_rows(engine, 1, next_attempt_at=NOW)
    stale = claim(engine, NOW)  # attempt 1, and its worker hangs past its lease
    with engine.begin() as connection:  # the lease ended, the row failed, an operator retried
        connection.execute(
            update(outbox).values(status=Status.PENDING, attempts=0, locked_until=None)
        )
    newer = claim(engine, NOW + timedelta(seconds=1))
    assert [row.attempts for row in newer.rows] == [row.attempts for row in stale.rows] == [1]

    assert record(engine, stale, [accepted(stale.rows[0], "d" * 32)], NOW) == set()
    assert statuses(engine) == {newer.ids[0]: ("sending", 1)}
    assert record(engine, newer, [accepted(newer.rows[0], "e" * 32)], NOW) == {newer.ids[0]}


def test_nothing_is_claimed_when_the_gate_changed_since_it_was_read(engine: Engine) -> None:
    add_rows(engine, 3, next_attempt_at=NOW)
    with engine.begin() as connection:
        version = gate_version(connection)
        connection.execute(  # another worker paused everyone meanwhile
            update(gates.dispatch_gate).values(version=gates.dispatch_gate.c.version + 1)
        )
        stale = claims.claim(connection, limit=10, lease=LEASE, now=NOW, version=version, token=1)
        fresh = claims.claim(
            connection, limit=10, lease=LEASE, now=NOW, version=version + 1, token=2
        )
    assert (len(stale), len(fresh)) == (0, 3)


def test_lanes_are_claimed_urgent_first_then_lapsed_leases_then_normal_then_bulk(
    engine: Engine,
) -> None:
    lapsed = add_rows(engine, 1, prefix="lapsed", priority=2, next_attempt_at=NOW - LEASE)
    assert claim(engine, NOW - LEASE).ids == lapsed  # its worker dies; the lease ends at NOW
    bulk = add_rows(engine, 2, prefix="bulk", priority=2, next_attempt_at=NOW - timedelta(hours=1))
    normal = add_rows(engine, 2, prefix="normal", next_attempt_at=NOW - timedelta(minutes=30))
    urgent = add_rows(engine, 2, prefix="urgent", priority=0, next_attempt_at=NOW)

    order = [claim(engine, NOW + timedelta(seconds=1), limit=1).ids[0] for _ in range(7)]

    assert order == [*urgent, *lapsed, *normal, *bulk]


def test_the_claim_remembers_when_a_message_first_fell_due(engine: Engine) -> None:
    [row_id] = add_rows(engine, 1, next_attempt_at=NOW - timedelta(minutes=5))
    claim(engine, NOW)
    with engine.begin() as connection:  # a transient answer moved its next attempt on
        connection.execute(
            update(outbox).values(status=Status.PENDING, next_attempt_at=NOW + timedelta(minutes=1))
        )
    [again] = claim(engine, NOW + timedelta(minutes=1)).rows
    with engine.connect() as connection:
        first_due = connection.scalar(select(outbox.c.first_due_at).where(outbox.c.id == row_id))
    assert first_due == NOW - timedelta(minutes=5)
    assert again.attempts == 2


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


def test_count_due_counts_every_lane(engine: Engine) -> None:
    for priority in (0, 1, 2):
        add_rows(engine, 2, prefix=f"lane{priority}-", priority=priority, next_attempt_at=NOW)
    add_rows(engine, 5, prefix="scheduled", priority=0, next_attempt_at=NOW + timedelta(hours=1))
    with engine.connect() as connection:
        assert claims.count_due(connection, now=NOW, cap=100) == 6
        assert claims.count_due(connection, now=NOW, cap=5) == 5


# -- prune --------------------------------------------------------------------------------------


def test_prune_deletes_only_old_accepted_rows_in_chunks(engine: Engine) -> None:
    old, recent = NOW - timedelta(days=40), NOW - timedelta(days=1)
    accepted = {"status": Status.ACCEPTED, "tracking_id": "a" * 32}
    add_rows(engine, 7, prefix="old-accepted", accepted_at=old, **accepted)
    kept = add_rows(engine, 3, prefix="new-accepted", accepted_at=recent, **accepted)
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
            version = gate_version(connection)
            captured.clear()
            claimed = claims.claim(
                connection, limit=100, lease=LEASE, now=NOW, version=version, token=1
            )
            assert len(claimed) == 5
            transaction.rollback()
        event.remove(connection, "before_cursor_execute", capture)
        [(statement, parameters)] = captured
        plan = "\n".join(connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).scalars())

    assert "ix_outbox_messages_due" in plan, plan
    assert "ix_outbox_messages_lease" in plan, plan
    assert "Seq Scan on outbox_messages" not in plan, plan
