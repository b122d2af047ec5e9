"""The sending policy in the dispatch path, on PostgreSQL and SQLite, with the time injected.

Held messages stay pending with no attempt spent and become due again by themselves; refused
ones fail unsent with a reason naming the rule. Raw-SQL rows obey every rule.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models import NewMessage, OutboxMessage, Priority, Status, enqueue_many
from models.suppressions import outbox_suppressions
from tests.integration.dispatch.harness import ALPHA, Outbox, recipient
from worker.ops.suppressions import suppress, suppressed, unsuppress

STOCKHOLM = "46701234567"
TOKYO = "81312345678"
NEW_YORK = "12125551234"
QUIET = {"OUTBOX_QUIET_HOURS": "21:00-08:00", "OUTBOX_MAX_AGE_SECONDS": 7 * 86_400}


def next_local(hour: int, zone: str, after: datetime) -> datetime:
    """The first moment after ``after`` when it is ``hour``:00 in ``zone``, in UTC."""
    local = after.astimezone(ZoneInfo(zone))
    moment = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if moment <= local:
        moment += timedelta(days=1)
    return moment.astimezone(UTC)


def add(outbox: Outbox, to: str, key: str, **options: Any) -> str:
    message = NewMessage.create(recipient=to, content=ALPHA, client_message_id=key, **options)
    with Session(outbox.engine) as session, session.begin():
        return enqueue_many(session, [message])[0]


def test_quiet_hours_hold_bulk_in_the_recipients_own_time_and_release_it_after(
    outbox: Outbox,
) -> None:
    night = next_local(22, "Europe/Stockholm", outbox.clock.now)  # 22:00 in Stockholm
    outbox.clock.move_to(night)  # 07:00 in Tokyo, 16:00 or 17:00 in New York
    add(outbox, STOCKHOLM, "stockholm-bulk", priority=Priority.BULK)
    add(outbox, STOCKHOLM, "stockholm-code", priority=Priority.URGENT)
    add(outbox, TOKYO, "tokyo-bulk", priority=Priority.BULK)
    add(outbox, NEW_YORK, "new-york-bulk", priority=Priority.BULK)
    add(
        outbox,
        STOCKHOLM,
        "stockholm-late",
        priority=Priority.BULK,
        expires_at=night + timedelta(hours=3),
    )
    dispatcher = outbox.dispatcher(**QUIET)

    outbox.drain(dispatcher)

    rows = outbox.rows()
    morning = next_local(8, "Europe/Stockholm", night)
    held = rows["stockholm-bulk"]
    assert (held.status, held.attempts, held.next_attempt_at) == (Status.PENDING, 0, morning)
    assert held.last_error == f"held: quiet hours until {morning:%Y-%m-%d %H:%M} UTC"
    assert rows["tokyo-bulk"].status == Status.PENDING  # 07:00 in Tokyo: quiet until 08:00
    assert rows["tokyo-bulk"].next_attempt_at == next_local(8, "Asia/Tokyo", night)
    assert rows["new-york-bulk"].status == Status.ACCEPTED
    assert rows["stockholm-code"].status == Status.ACCEPTED  # urgent: never held unless named
    late = rows["stockholm-late"]
    assert (late.status, late.attempts) == (Status.FAILED, 0)
    assert late.last_error == f"expired: quiet hours until {morning:%Y-%m-%d %H:%M} UTC"
    assert dispatcher.dispatch_once().claimed == 0  # not claimed again and again

    outbox.settle(dispatcher)  # the clock moves to each due time: no stall, no operator
    assert outbox.row("stockholm-bulk").status == Status.ACCEPTED
    assert outbox.row("stockholm-bulk").attempts == 1


def test_no_request_starts_inside_the_window_the_lease_looks_ahead(outbox: Outbox) -> None:
    nine = next_local(21, "Europe/Stockholm", outbox.clock.now)
    outbox.clock.move_to(nine - timedelta(seconds=45))  # the lease (30 s) ends before 21:00
    add(outbox, STOCKHOLM, "before", priority=Priority.BULK)
    dispatcher = outbox.dispatcher(**QUIET)
    outbox.drain(dispatcher)
    assert outbox.row("before").status == Status.ACCEPTED

    outbox.clock.move_to(nine - timedelta(seconds=15))  # a request could start at 21:00:10
    add(outbox, STOCKHOLM, "too-close", priority=Priority.BULK)
    outbox.drain(dispatcher)
    held = outbox.row("too-close")
    assert (held.status, held.next_attempt_at) == (Status.PENDING, nine + timedelta(hours=11))


def test_quiet_hours_apply_to_the_named_lanes(outbox: Outbox) -> None:
    outbox.clock.move_to(next_local(23, "Europe/Stockholm", outbox.clock.now))
    add(outbox, STOCKHOLM, "code", priority=Priority.URGENT)
    add(outbox, STOCKHOLM, "normal")
    outbox.drain(outbox.dispatcher(**QUIET, OUTBOX_QUIET_PRIORITIES="urgent,normal"))
    assert {key: row.status for key, row in outbox.rows().items()} == {
        "code": Status.PENDING,
        "normal": Status.PENDING,
    }


def test_an_opted_out_recipient_gets_codes_but_no_campaign(outbox: Outbox) -> None:
    with outbox.engine.begin() as connection:
        assert suppress(connection, "+46 70-123 45 67", reason="STOP by SMS") == STOCKHOLM
    add(outbox, STOCKHOLM, "campaign", priority=Priority.BULK)
    add(outbox, STOCKHOLM, "code", priority=Priority.URGENT)
    outbox.insert_raw("raw-normal", STOCKHOLM, ALPHA)  # raw SQL obeys the list too

    outbox.drain(outbox.dispatcher())

    rows = outbox.rows()
    assert rows["code"].status == Status.ACCEPTED
    for key in ("campaign", "raw-normal"):
        assert (rows[key].status, rows[key].attempts) == (Status.FAILED, 0)
        assert rows[key].last_error == "suppressed: STOP by SMS"
    assert set(outbox.sandbox.ledger()) == {"code"}  # the others never reached Wiraya


def test_all_lanes_includes_urgent_and_remove_takes_the_recipient_off(outbox: Outbox) -> None:
    with outbox.engine.begin() as connection:
        suppress(connection, "46701234567", reason="court order", all_lanes=True)
        [entry] = suppressed(connection)
    assert (entry.recipient, entry.scope, entry.source) == (STOCKHOLM, "all", "operator")
    add(outbox, STOCKHOLM, "code", priority=Priority.URGENT)
    outbox.drain(outbox.dispatcher())
    assert outbox.row("code").last_error == "suppressed: court order"

    with outbox.engine.begin() as connection:
        assert unsuppress(connection, "+46 70 123 45 67")
        assert not unsuppress(connection, STOCKHOLM)
    add(outbox, STOCKHOLM, "code-2", priority=Priority.URGENT)
    outbox.drain(outbox.dispatcher())
    assert outbox.row("code-2").status == Status.ACCEPTED


def test_not_delivered_reports_in_a_row_put_the_recipient_on_the_list(outbox: Outbox) -> None:
    to = recipient(1)
    for key in ("first", "second"):
        add(outbox, to, key)
    dispatcher = outbox.dispatcher(OUTBOX_SUPPRESS_AFTER_NOT_DELIVERED=2)
    outbox.drain(dispatcher)
    with outbox.engine.begin() as connection:
        connection.execute(update(OutboxMessage).values(delivery_status="NOT_DELIVERED"))
    add(outbox, to, "third")
    outbox.drain(dispatcher)
    assert outbox.row("third").last_error == "suppressed: 2 NOT_DELIVERED reports in a row"
    with outbox.engine.connect() as connection:
        row = connection.execute(select(outbox_suppressions)).one()
    assert (row.recipient, row.source, row.scope) == (to, "reports", "campaigns")


def test_a_delivered_report_in_between_breaks_the_row(outbox: Outbox) -> None:
    to = recipient(7)
    for key in ("first", "second", "third"):
        add(outbox, to, key)
    dispatcher = outbox.dispatcher(OUTBOX_SUPPRESS_AFTER_NOT_DELIVERED=2)
    outbox.drain(dispatcher)
    statuses = {"first": "NOT_DELIVERED", "second": "DELIVERED", "third": "NOT_DELIVERED"}
    with outbox.engine.begin() as connection:
        for key, status in statuses.items():
            connection.execute(
                update(OutboxMessage)
                .where(OutboxMessage.client_message_id == key)
                .values(delivery_status=status)
            )
    add(outbox, to, "fourth")
    outbox.drain(dispatcher)
    assert outbox.row("fourth").status == Status.ACCEPTED


def test_a_raw_sql_copy_of_a_message_fails_as_its_duplicate(outbox: Outbox) -> None:
    to = recipient(2)
    add(outbox, to, "reminder-1")
    copy = {"text": ALPHA["text"], "sender": ALPHA["sender"], "$type": "SMSFromAlpha"}
    outbox.insert_raw("reminder-1-again", to, copy)  # another id, keys in another order
    outbox.insert_raw("other-text", to, {**copy, "text": "Something else"})
    dispatcher = outbox.dispatcher(OUTBOX_DEDUPE_WINDOW_SECONDS=600)

    outbox.drain(dispatcher)

    rows = outbox.rows()
    assert rows["reminder-1"].status == Status.ACCEPTED
    assert rows["other-text"].status == Status.ACCEPTED
    again = rows["reminder-1-again"]
    assert (again.status, again.attempts) == (Status.FAILED, 0)
    assert again.last_error == "duplicate of reminder-1"

    outbox.clock.advance(601)  # outside the window the same text goes out again
    outbox.insert_raw("next-week", to, copy)
    outbox.drain(dispatcher)
    assert outbox.row("next-week").status == Status.ACCEPTED


def test_an_expired_copy_in_the_same_claim_is_no_earlier_copy(outbox: Outbox) -> None:
    to = recipient(8)
    soon = datetime.now(UTC) + timedelta(seconds=30)
    add(outbox, to, "expiring", expires_at=soon)
    add(outbox, to, "twin")
    outbox.clock.move_to(soon + timedelta(seconds=1))
    outbox.drain(outbox.dispatcher(OUTBOX_DEDUPE_WINDOW_SECONDS=600))
    assert outbox.row("expiring").last_error is not None
    assert outbox.row("expiring").last_error.startswith("expired:")
    assert outbox.row("twin").status == Status.ACCEPTED


def test_pacing_lets_one_message_per_recipient_go_per_interval_in_order(outbox: Outbox) -> None:
    to = recipient(3)
    for n in range(3):
        add(outbox, to, f"m{n}")
    add(outbox, recipient(4), "other")
    dispatcher = outbox.dispatcher(OUTBOX_RECIPIENT_MIN_INTERVAL_SECONDS=6)

    [summary] = outbox.drain(dispatcher)
    assert (summary.accepted, summary.retried, summary.released) == (2, 0, 0)
    assert summary.policy == {"paced": 2}  # counted as held by pacing, not as retries
    rows = outbox.rows()
    assert [rows[f"m{n}"].status for n in range(3)] == [
        Status.ACCEPTED,
        Status.PENDING,
        Status.PENDING,
    ]
    assert rows["other"].status == Status.ACCEPTED
    assert (rows["m1"].attempts, rows["m1"].next_attempt_at) == (
        0,
        outbox.clock.now + timedelta(seconds=6),
    )

    outbox.clock.advance(5)
    outbox.drain(dispatcher)
    assert outbox.row("m1").status == Status.PENDING
    outbox.clock.advance(1)
    outbox.drain(dispatcher)
    assert [outbox.row(f"m{n}").status for n in range(3)] == [
        Status.ACCEPTED,
        Status.ACCEPTED,
        Status.PENDING,
    ]
    outbox.settle(dispatcher)
    assert outbox.row("m2").attempts == 1


def test_segments_are_stored_for_a_raw_row_and_counted_by_lane_and_encoding(outbox: Outbox) -> None:
    outbox.insert_raw("raw-long", recipient(5), {**ALPHA, "text": "\u2019" + "a" * 70})
    add(outbox, recipient(6), "short")
    summaries = outbox.drain(outbox.dispatcher())
    assert outbox.row("raw-long").segments == 2
    assert outbox.row("short").segments == 1
    counted: dict[str, int] = {}
    for summary in summaries:
        for key, value in summary.segments.items():
            counted[key] = counted.get(key, 0) + value
    assert counted == {"normal/ucs2": 2, "normal/gsm7": 1}
