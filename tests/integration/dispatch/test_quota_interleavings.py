"""The quota's counter under concurrent workers: a booking is one conditional statement on what
the worker read, so of two workers booking one tenant at once neither passes the limit, and
together they never do (an interleaving stepped by hand on both databases, and real threads
racing on PostgreSQL); and the deferral of a used-up tenant's backlog, which leaves alone what
counted already, what an exempt lane holds and what would expire first."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from models import OutboxMessage, Priority, Status
from tests.integration.dispatch.harness import ALPHA, Outbox
from tests.integration.dispatch.test_tenant_keys import enqueue
from worker.dispatch.dispatcher import Dispatcher
from worker.dispatch.policy.quotas import (
    Limits,
    Usage,
    Wanted,
    book,
    book_if_unchanged,
    defer_due,
    fitting,
    usage,
)

DAY = date(2026, 12, 7)


def wanted(first: int, count: int, segments: int = 1) -> list[Wanted]:
    return [Wanted(first + n, segments) for n in range(count)]


def test_a_stale_read_books_nothing_and_the_next_read_books_what_is_left(engine: Engine) -> None:
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    limits = Limits(messages=4)
    with autocommit.connect() as first, autocommit.connect() as second:
        read = usage(first, "clinic", DAY)  # the first worker reads 0 of 4 ...
        assert fitting(read, limits, wanted(0, 3)) == wanted(0, 3)
        assert book(second, "clinic", DAY, limits, wanted(10, 3)).granted == {10, 11, 12}
        # ... and its booking of 3 on that read is refused: 6 would pass the limit.
        assert not book_if_unchanged(first, "clinic", DAY, read, Usage(3, 3))
        again = book(first, "clinic", DAY, limits, wanted(0, 3))
        assert (again.granted, again.usage) == (frozenset({0}), Usage(4, 4))
        assert book(second, "clinic", DAY, limits, wanted(20, 1)).granted == frozenset()
        assert usage(second, "clinic", DAY) == Usage(4, 4)


def test_two_limits_hold_together(engine: Engine) -> None:
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    limits = Limits(messages=10, segments=5)
    with autocommit.connect() as connection:
        booked = book(connection, "shop", DAY, limits, [*wanted(0, 2, 2), *wanted(5, 3, 1)])
        # 2 + 2 parts, then one of 1: five parts used up, the rest wait.
        assert (booked.granted, booked.usage) == (frozenset({0, 1, 5}), Usage(3, 5))
        exempt = book(connection, "shop", DAY, limits, [Wanted(9, 1, exempt=True)])
        assert (exempt.granted, exempt.usage) == (frozenset({9}), Usage(4, 6))


def test_racing_workers_never_pass_the_quota_together(postgres_engine: Engine) -> None:
    autocommit = postgres_engine.execution_options(isolation_level="AUTOCOMMIT")
    workers, batches, size, limit = 6, 4, 5, 37
    start = threading.Barrier(workers)
    granted: list[int] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        with autocommit.connect() as connection:
            start.wait()
            for batch in range(batches):
                first = (worker * batches + batch) * size
                booked = book(
                    connection, "clinic", DAY, Limits(messages=limit), wanted(first, size)
                )
                assert booked.usage is not None  # never gave up: someone always progresses
                with lock:
                    granted.extend(booked.granted)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(granted) == len(set(granted)) == limit  # 120 asked for: exactly 37 went
    with autocommit.connect() as connection:
        assert usage(connection, "clinic", DAY) == Usage(limit, limit)


def test_deferring_a_backlog_moves_only_what_has_not_counted(engine: Engine) -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    tomorrow = datetime(2026, 12, 8, tzinfo=UTC)
    with Session(engine) as session, session.begin():
        rows = {
            key: OutboxMessage(
                client_message_id=key,
                recipient="46701234567",
                content=ALPHA,
                tenant=tenant,
                priority=priority,
                next_attempt_at=now - timedelta(minutes=1),
                **extra,
            )
            for key, tenant, priority, extra in (
                ("waiting", "clinic", Priority.BULK, {}),
                ("counted", "clinic", Priority.BULK, {"quota_day": DAY}),  # a resend
                ("code", "clinic", Priority.URGENT, {}),  # an exempt lane
                ("expiring", "clinic", Priority.BULK, {"expires_at": now + timedelta(hours=1)}),
                ("other", "shop", Priority.BULK, {}),
            )
        }
        session.add_all(rows.values())
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as connection:
        lanes = [Priority.NORMAL, Priority.BULK]
        assert defer_due(connection, "clinic", lanes, now, tomorrow, "held: test") == 1
    with Session(engine) as session:
        moved = {
            row.client_message_id: row.next_attempt_at == tomorrow
            for row in session.scalars(select(OutboxMessage))
        }
    assert moved == {
        "waiting": True,
        "counted": False,
        "code": False,
        "expiring": False,
        "other": False,
    }


def test_workers_draining_one_tenant_at_once_send_exactly_its_quota(pg_outbox: Outbox) -> None:
    enqueue(pg_outbox, "clinic", 120, 100, priority=Priority.BULK)
    settings = {"OUTBOX_DAILY_QUOTAS": "clinic=37", "OUTBOX_BATCH_SIZE": 5}
    workers = [pg_outbox.dispatcher(**settings) for _ in range(4)]
    start = threading.Barrier(len(workers))

    def drain(dispatcher: Dispatcher) -> None:
        start.wait()
        while dispatcher.dispatch_once().claimed:
            pass

    threads = [threading.Thread(target=drain, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = Counter(row.status for row in pg_outbox.rows().values())
    assert statuses == {Status.ACCEPTED: 37, Status.PENDING: 120 - 37}
    assert len(pg_outbox.sandbox.ledger()) == 37  # none sent beyond it, not even once
    with pg_outbox.engine.connect() as connection:
        assert usage(connection, "clinic", pg_outbox.clock.now.date()) == Usage(37, 37)
