"""Storing reports on PostgreSQL and SQLite: once each, the best one shown, early ones matched."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import OperationalError

from models.databases.postgresql import MATCH_LOCK
from tests.integration.reports.harness import (
    T0,
    accept,
    at,
    claim,
    delivery,
    enqueue,
    record_accepted,
    report,
    stored_reports,
    tracking,
    unmatched_count,
)
from worker.ops.processes import wait_for
from worker.reports.storage import store_reports

RECEIVED = at(3600)


def test_reports_set_the_delivery_status_of_their_messages(engine: Engine) -> None:
    first, second = accept(engine, 2)
    done = store_reports(
        engine, [report(1, "DELIVERED", 5), report(2, "NOT_DELIVERED", 7)], received_at=RECEIVED
    )
    assert (done.stored, done.matched, done.unmatched, done.duplicates) == (
        {"DELIVERED": 1, "NOT_DELIVERED": 1},
        2,
        0,
        0,
    )
    assert delivery(engine, first) == ("DELIVERED", at(5))
    assert delivery(engine, second) == ("NOT_DELIVERED", at(7))
    assert done.delivered_seconds == [pytest.approx(5.0, abs=0.01)]  # accepted at T0, done +5 s
    rows = stored_reports(engine)
    assert [(r.tracking_id, r.status, r.done_at, r.received_at) for r in rows] == [
        (tracking(1), "DELIVERED", at(5), RECEIVED),
        (tracking(2), "NOT_DELIVERED", at(7), RECEIVED),
    ]
    assert [r.message_id for r in rows] == [first, second]
    assert orjson.loads(rows[0].report)["trackingId"] == tracking(1)


def test_a_report_without_done_at_takes_the_time_it_was_received(engine: Engine) -> None:
    (message,) = accept(engine, 1)
    store_reports(engine, [report(1, "DELIVERED", None)], received_at=RECEIVED)
    assert delivery(engine, message) == ("DELIVERED", RECEIVED)


def test_a_repeated_report_changes_nothing(engine: Engine) -> None:
    (message,) = accept(engine, 1)
    batch = [report(1, "NEXTATTEMPT", 5), report(1, "NEXTATTEMPT", None)]
    store_reports(engine, batch, received_at=RECEIVED)
    before = stored_reports(engine), delivery(engine, message)
    # The whole batch again (Wiraya resending), later, and twice within one request.
    again = store_reports(engine, batch + batch, received_at=at(7200))
    assert (sum(again.stored.values()), again.duplicates, again.updated) == (0, 4, 0)
    assert (stored_reports(engine), delivery(engine, message)) == before


def test_duplicates_within_one_request_are_stored_once(engine: Engine) -> None:
    accept(engine, 1)
    done = store_reports(engine, [report(1, "DELIVERED", 5)] * 3, received_at=RECEIVED)
    assert (done.stored, done.duplicates) == ({"DELIVERED": 1}, 2)
    assert len(stored_reports(engine)) == 1


@pytest.mark.parametrize(
    ("arrivals", "expected"),
    [
        # A call: two attempts, answered at the second. Whatever the order of arrival, the
        # final report stays, and a later NEXTATTEMPT never replaces it.
        ([("NEXTATTEMPT", 10), ("DELIVERED", 20)], ("DELIVERED", 20)),
        ([("DELIVERED", 20), ("NEXTATTEMPT", 10)], ("DELIVERED", 20)),
        ([("DELIVERED", 20), ("NEXTATTEMPT", 30)], ("DELIVERED", 20)),
        ([("NEXTATTEMPT", 10), ("NEXTATTEMPT", 30)], ("NEXTATTEMPT", 30)),
        ([("NEXTATTEMPT", 30), ("NEXTATTEMPT", 10)], ("NEXTATTEMPT", 30)),
        # Two final reports: the later event wins, whichever arrives first.
        ([("NOT_DELIVERED", 10), ("DELIVERED", 20)], ("DELIVERED", 20)),
        ([("DELIVERED", 20), ("NOT_DELIVERED", 10)], ("DELIVERED", 20)),
        # A status Wiraya never named is kept as seen but is not final: a made-up word with a
        # later doneAt replaces no final report and cannot keep a real one out.
        ([("DELIVERED", 20), ("ZZZ", 3900)], ("DELIVERED", 20)),
        ([("ZZZ", 3900), ("DELIVERED", 20)], ("DELIVERED", 20)),
        ([("NEXTATTEMPT", 10), ("ZZZ", 30)], ("ZZZ", 30)),
    ],
)
@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "one-request"])
def test_the_best_report_is_shown_whatever_the_order(
    engine: Engine,
    arrivals: list[tuple[str, float]],
    expected: tuple[str, float],
    together: bool,
) -> None:
    (message,) = accept(engine, 1)
    reports = [report(1, status, done) for status, done in arrivals]
    if together:
        store_reports(engine, reports, received_at=RECEIVED)
    else:
        for one in reports:
            store_reports(engine, [one], received_at=RECEIVED)
    assert delivery(engine, message) == (expected[0], at(expected[1]))


def test_an_early_report_is_matched_when_the_worker_records_its_tracking_id(
    engine: Engine,
) -> None:
    ids = enqueue(engine, 3)
    claim(engine, ids)
    # Wiraya calls back before the worker has written the answer to its send.
    done = store_reports(
        engine,
        [report(1, "DELIVERED", 2), report(2, "NEXTATTEMPT", 1), report(2, "NOTREACHED", 9)],
        received_at=at(1),
    )
    assert (done.matched, done.unmatched) == (0, 3)
    assert [delivery(engine, i) for i in ids] == [(None, None)] * 3
    with engine.begin() as connection:
        assert record_accepted(connection, ids, [1, 2, 3], when=at(3)) == set(ids)
    assert delivery(engine, ids[0]) == ("DELIVERED", at(2))
    assert delivery(engine, ids[1]) == ("NOTREACHED", at(9))
    assert delivery(engine, ids[2]) == (None, None)
    assert unmatched_count(engine) == 0
    assert {r.tracking_id: r.message_id for r in stored_reports(engine)} == {
        tracking(1): ids[0],
        tracking(2): ids[1],
    }
    # A later report still moves it, by the same rule.
    store_reports(engine, [report(2, "DELIVERED", 30)], received_at=at(40))
    assert delivery(engine, ids[1]) == ("DELIVERED", at(30))


def test_the_trigger_ranks_an_unknown_status_below_a_final_one(engine: Engine) -> None:
    ids = enqueue(engine, 1)
    claim(engine, ids)
    store_reports(engine, [report(1, "DELIVERED", 2), report(1, "ZZZ", 3900)], received_at=at(1))
    with engine.begin() as connection:
        record_accepted(connection, ids, [1], when=at(3))
    assert delivery(engine, ids[0]) == ("DELIVERED", at(2))


def test_a_report_for_an_unknown_tracking_id_stays_unmatched_and_touches_no_message(
    engine: Engine,
) -> None:
    ids = accept(engine, 2)
    done = store_reports(engine, [report(99, "DELIVERED", 5)], received_at=RECEIVED)
    assert (done.matched, done.unmatched, done.updated) == (0, 1, 0)
    assert [delivery(engine, i) for i in ids] == [(None, None)] * 2
    assert unmatched_count(engine) == 1
    # Recording other tracking ids later leaves it unmatched.
    (later,) = enqueue(engine, 1, start=3)
    claim(engine, [later])
    with engine.begin() as connection:
        record_accepted(connection, [later], [3])
    assert unmatched_count(engine) == 1 and delivery(engine, later) == (None, None)


def test_ten_thousand_reports_in_one_statement(engine: Engine) -> None:
    ids = accept(engine, 100)
    reports = [report(n, "DELIVERED", n % 50) for n in range(1, 10_001)]
    statements: list[str] = []

    def seen(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "outbox_delivery_reports" in statement:
            statements.append(" ".join(statement.split())[:60])

    event.listen(engine, "before_cursor_execute", seen)
    try:
        done = store_reports(engine, reports, received_at=RECEIVED)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert sum(done.stored.values()) == 10_000
    assert (done.matched, done.unmatched, done.updated) == (100, 9_900, 100)
    inserts = [s for s in statements if "INSERT INTO outbox_delivery_reports" in s]
    assert len(inserts) == 1, statements
    # Stored unmatched, then matched again under the lock on PostgreSQL: still two statements.
    assert len(statements) <= 2, statements
    assert delivery(engine, ids[-1]) == ("DELIVERED", at(0))  # tracking(100): 100 % 50 == 0


def test_nul_and_control_characters_are_stored_as_received(engine: Engine) -> None:
    (message,) = accept(engine, 1)
    store_reports(
        engine, [report(1, "DELIVERED", 5, note="a\x00b\x07", deep=[[[[]]]])], received_at=RECEIVED
    )
    (row,) = stored_reports(engine)
    assert orjson.loads(row.report)["note"] == "a\x00b\x07"
    assert delivery(engine, message) == ("DELIVERED", at(5))


# -- a report and a record at the same moment (PostgreSQL; SQLite has one writer at a time) --


def _waiting_for_the_match_lock(engine: Engine) -> bool | None:
    with engine.connect() as connection:
        waiting = connection.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND ((classid::bigint << 32) | objid::bigint) = :key"
            ),
            {"key": MATCH_LOCK},
        )
    return True if waiting else None


def _wait_at_the_match_lock(engine: Engine) -> None:
    """Until a transaction waits for the match lock (a request, or a record)."""
    wait_for(
        lambda: _waiting_for_the_match_lock(engine),
        timeout=10,
        what="_waiting_for_the_match_lock(engine)",
    )


def test_a_report_stored_while_a_record_is_in_flight_is_matched_after_its_commit(
    postgres_engine: Engine,
) -> None:
    engine = postgres_engine
    ids = enqueue(engine, 1)
    claim(engine, ids)
    with engine.connect() as worker:
        transaction = worker.begin()
        # The record statement has run (its trigger found no report) but not yet committed.
        record_accepted(worker, ids, [1], when=at(3))
        outcome: dict[str, Any] = {}
        receiver = threading.Thread(
            target=lambda: outcome.update(
                done=store_reports(engine, [report(1, "DELIVERED", 2)], received_at=at(2))
            )
        )
        receiver.start()
        # The request stored its report unmatched and now waits for the record to commit,
        # its report not committed yet: store and match commit together.
        _wait_at_the_match_lock(engine)
        assert unmatched_count(engine) == 0
        transaction.commit()
    receiver.join(timeout=10)
    assert outcome["done"].matched == 1 and outcome["done"].unmatched == 0
    assert delivery(engine, ids[0]) == ("DELIVERED", at(2))
    assert unmatched_count(engine) == 0


def test_a_request_that_fails_between_store_and_match_loses_no_report(
    postgres_engine: Engine,
) -> None:
    # The request's connection is killed while it waits to match the report it stored
    # unmatched (a crash, a restart, a failover). Wiraya resends: the report must end matched.
    engine = postgres_engine
    ids = enqueue(engine, 1)
    claim(engine, ids)
    failed: list[BaseException] = []

    def request() -> None:
        try:
            store_reports(engine, [report(1, "DELIVERED", 2)], received_at=at(2))
        except OperationalError as error:
            failed.append(error)

    with engine.connect() as worker:
        transaction = worker.begin()
        record_accepted(worker, ids, [1], when=at(3))  # in flight: its trigger found no report
        receiver = threading.Thread(target=request)
        receiver.start()
        _wait_at_the_match_lock(engine)
        with engine.connect() as killer:
            killer.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND NOT granted "
                    "AND ((classid::bigint << 32) | objid::bigint) = :key"
                ),
                {"key": MATCH_LOCK},
            )
        receiver.join(timeout=10)
        transaction.commit()
    assert failed, "the request's connection was killed: it must have failed"
    resent = store_reports(engine, [report(1, "DELIVERED", 2)], received_at=at(4))
    assert resent.matched + resent.unmatched + resent.duplicates == 1
    assert delivery(engine, ids[0]) == ("DELIVERED", at(2))
    assert unmatched_count(engine) == 0
    assert [r.message_id for r in stored_reports(engine)] == ids


def test_a_resent_report_left_unmatched_earlier_is_matched(postgres_engine: Engine) -> None:
    # A report stored unmatched and never matched (by an earlier version that stored and
    # matched in two transactions) is matched when Wiraya sends it again.
    engine = postgres_engine
    (message,) = accept(engine, 1)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox_delivery_reports (tracking_id, status, done_at, received_at, "
                "report) VALUES (:tracking, 'DELIVERED', :done, :done, '{}')"
            ),
            {"tracking": tracking(1), "done": at(2)},
        )
    resent = store_reports(engine, [report(1, "DELIVERED", 2)], received_at=at(4))
    assert resent.duplicates == 1
    assert delivery(engine, message) == ("DELIVERED", at(2))
    assert unmatched_count(engine) == 0


def test_a_record_waits_for_a_request_that_holds_the_match_lock(postgres_engine: Engine) -> None:
    engine = postgres_engine
    ids = enqueue(engine, 1)
    claim(engine, ids)
    store_reports(engine, [report(1, "DELIVERED", 2)], received_at=at(2))
    with engine.connect() as request:
        transaction = request.begin()
        request.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MATCH_LOCK})
        recorded: dict[str, Any] = {}

        def worker() -> None:
            with engine.begin() as connection:
                recorded["ids"] = record_accepted(connection, ids, [1], when=at(3))

        thread = threading.Thread(target=worker)
        thread.start()
        _wait_at_the_match_lock(engine)
        assert "ids" not in recorded
        transaction.commit()
    thread.join(timeout=10)
    assert recorded["ids"] == set(ids)
    assert delivery(engine, ids[0]) == ("DELIVERED", at(2))


def test_updates_that_set_no_tracking_id_never_wait_for_the_match_lock(
    postgres_engine: Engine,
) -> None:
    # The trigger runs once per statement on every update of outbox_messages: a claim or an
    # operator's change sets no tracking id and must not queue behind a request that holds
    # the lock exclusively (a wait would end in the statement timeout).
    engine = postgres_engine
    ids = enqueue(engine, 3)
    store_reports(engine, [report(1, "DELIVERED", 2)], received_at=at(2))
    with engine.connect() as request, engine.connect() as other:
        request.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MATCH_LOCK})
        other.execute(text("SET statement_timeout = '2s'"))
        changes = (
            "UPDATE outbox_messages SET status = 'sending', locked_until = updated_at, "
            "claim_token = 7 WHERE id = ANY(:ids)",
            "UPDATE outbox_messages SET last_error = 'noted' WHERE id = ANY(:ids)",
        )
        changed = [other.execute(text(sql), {"ids": ids}).rowcount for sql in changes]
        other.commit()
        request.commit()
    assert changed == [3, 3]


def test_the_trigger_takes_the_lock_the_receiver_takes(postgres_engine: Engine) -> None:
    with postgres_engine.connect() as connection:
        source = connection.scalar(
            text("SELECT prosrc FROM pg_proc WHERE proname = 'outbox_messages_match_reports'")
        )
    assert f"pg_advisory_xact_lock_shared({MATCH_LOCK})" in source


def test_concurrent_requests_about_the_same_messages_all_land(postgres_engine: Engine) -> None:
    engine = postgres_engine
    ids = accept(engine, 200)
    batches = [
        [report(n, status, done) for n in range(1, 201)]
        for status, done in (
            ("NEXTATTEMPT", 1),
            ("DELIVERED", 5),
            ("NEXTATTEMPT", 9),
            ("DELIVERED", 5),
        )
    ]
    threads = [
        threading.Thread(
            target=store_reports, args=(engine, batch), kwargs={"received_at": RECEIVED}
        )
        for batch in batches
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(stored_reports(engine)) == 600  # the repeated DELIVERED batch stored once
    assert {delivery(engine, i) for i in ids} == {("DELIVERED", at(5))}
    assert T0 < RECEIVED
