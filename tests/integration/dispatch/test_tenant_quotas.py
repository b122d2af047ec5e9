"""Daily quotas per tenant in the dispatch path, on PostgreSQL and SQLite, with the time injected.

Over its quota a tenant's messages wait, unsent and with no attempt spent, until the next quota
day begins, and are not claimed again meanwhile; other tenants go on; urgent messages go and
count (unless the exemption is off); a message counts once, whatever its resends; segments
count where the outbox knows them.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from models import NewMessage, Priority, Status, enqueue_many, outbox_tenant_quotas
from tests.integration.dispatch.harness import ALPHA, Outbox, recipient
from tests.integration.dispatch.test_tenant_keys import enqueue
from worker.dispatch.policy import quotas

TEMPLATE = {"$type": "SMSProject", "projectId": 4711}


def two_parts(n: int) -> dict[str, Any]:
    """An SMS text of two GSM-7 parts (161 to 306 characters)."""
    return {**ALPHA, "text": f"{n:03d} " + "x" * 200}


def add(outbox: Outbox, tenant: str, key: str, content: dict[str, Any], **options: Any) -> str:
    message = NewMessage.create(
        recipient=recipient(len(key) * 1000 + sum(map(ord, key))),
        content=content,
        client_message_id=key,
        tenant=tenant,
        **options,
    )
    with Session(outbox.engine) as session, session.begin():
        return enqueue_many(session, [message])[0]


def counts(outbox: Outbox) -> dict[tuple[date, str], tuple[int, int]]:
    quotas = outbox_tenant_quotas
    with outbox.engine.connect() as connection:
        rows = connection.execute(
            select(quotas.c.day, quotas.c.tenant, quotas.c.messages, quotas.c.segments)
        )
        return {(day, tenant): (messages, parts) for day, tenant, messages, parts in rows}


def midnight_after(moment: datetime, zone: str = "UTC") -> datetime:
    local = moment.astimezone(ZoneInfo(zone))
    return datetime.combine(local.date() + timedelta(days=1), time(0), ZoneInfo(zone)).astimezone(
        UTC
    )


def test_over_its_quota_a_tenant_waits_for_the_next_day_and_others_go_on(outbox: Outbox) -> None:
    clinic = enqueue(outbox, "clinic", 5, 100)
    shop = enqueue(outbox, "shop", 3, 200)
    dispatcher = outbox.dispatcher(OUTBOX_DAILY_QUOTAS="clinic=3")
    today, tomorrow = outbox.clock.now.date(), midnight_after(outbox.clock.now)

    outbox.drain(dispatcher)

    rows = outbox.rows()
    assert [rows[key].status for key in shop] == [Status.ACCEPTED] * 3
    assert [rows[key].status for key in clinic[:3]] == [Status.ACCEPTED] * 3
    for key in clinic[3:]:
        held = rows[key]
        assert (held.status, held.attempts, held.next_attempt_at) == (Status.PENDING, 0, tomorrow)
        assert held.last_error == f"held: daily quota used up until {tomorrow:%Y-%m-%d %H:%M} UTC"
        assert held.quota_day is None  # it has not counted yet
    assert counts(outbox) == {(today, "clinic"): (3, 3)}  # ALPHA is one SMS part
    assert {rows[key].quota_day for key in clinic[:3]} == {today}
    assert dispatcher.dispatch_once().claimed == 0  # not claimed again and again

    outbox.settle(dispatcher)  # the clock moves to the next quota day: no operator needed
    assert {outbox.row(key).status for key in clinic} == {Status.ACCEPTED}
    assert outbox.row(clinic[4]).attempts == 1
    assert counts(outbox)[(tomorrow.date(), "clinic")] == (2, 2)


def test_a_used_up_tenants_backlog_waits_for_the_next_day_unclaimed(outbox: Outbox) -> None:
    enqueue(outbox, "clinic", 40, 100, priority=Priority.BULK)
    enqueue(outbox, "shop", 12, 200, priority=Priority.BULK)
    tomorrow = midnight_after(outbox.clock.now)
    before = outbox.clock.now + (tomorrow - outbox.clock.now) / 2
    expiring = add(outbox, "clinic", "expiring", ALPHA, priority=Priority.BULK, expires_at=before)
    dispatcher = outbox.dispatcher(OUTBOX_DAILY_QUOTAS="clinic=5", OUTBOX_BATCH_SIZE=5)

    summaries = outbox.drain(dispatcher)

    # The clinic's first batch uses its quota up; its 35 others (but one) move to the next
    # quota day unclaimed, and the shop's batches go on beside them.
    rows = outbox.rows()
    clinic = [row for key, row in rows.items() if key.startswith("clinic")]
    assert sum(row.status == Status.ACCEPTED for row in clinic) == 5
    waiting = {
        (row.status, row.attempts, row.next_attempt_at, row.last_error)
        for row in clinic
        if row.status != Status.ACCEPTED
    }
    reason = f"held: daily quota used up until {tomorrow:%Y-%m-%d %H:%M} UTC"
    assert waiting == {(Status.PENDING, 0, tomorrow, reason)}
    assert {row.status for key, row in rows.items() if key.startswith("shop")} == {Status.ACCEPTED}
    assert sum(summary.claimed for summary in summaries) == 5 + 12
    assert rows[expiring].status == Status.PENDING  # it would expire first: left due
    # A minute on the process claims the tenant's due rows again: the one left fails unsent.
    outbox.clock.advance(61)
    assert sum(summary.claimed for summary in outbox.drain(dispatcher)) == 1
    failed = outbox.row(expiring)
    assert (failed.status, failed.attempts) == (Status.FAILED, 0)
    assert failed.last_error == reason.replace("held:", "expired:")
    assert dispatcher.dispatch_once().claimed == 0


def test_another_workers_booking_tells_a_process_the_quota_is_used_up(outbox: Outbox) -> None:
    enqueue(outbox, "clinic", 4, 100, priority=Priority.BULK)
    first = outbox.dispatcher(OUTBOX_DAILY_QUOTAS="clinic=4", OUTBOX_BATCH_SIZE=4)
    second = outbox.dispatcher(OUTBOX_DAILY_QUOTAS="clinic=4", OUTBOX_BATCH_SIZE=4)
    assert first.dispatch_once().accepted == 4
    outbox.clock.advance(1)
    for n in range(6):
        add(outbox, "clinic", f"later-{n}", ALPHA, priority=Priority.BULK)

    learnt = second.dispatch_once()  # one batch, held: it learns from the counter

    assert (learnt.claimed, learnt.accepted, learnt.policy["over_quota"]) == (4, 0, 4)
    assert second.dispatch_once().claimed == 0  # the other two moved to the next day with them
    assert first.dispatch_once().claimed == 0
    rows = outbox.rows()
    assert {rows[f"later-{n}"].status for n in range(6)} == {Status.PENDING}
    assert {rows[f"later-{n}"].attempts for n in range(6)} == {0}


def test_urgent_messages_go_over_the_quota_and_count(outbox: Outbox) -> None:
    enqueue(outbox, "clinic", 3, 100)
    code = add(outbox, "clinic", "code", ALPHA, priority=Priority.URGENT)
    today = outbox.clock.now.date()
    dispatcher = outbox.dispatcher(OUTBOX_DAILY_QUOTAS="clinic=2")

    outbox.drain(dispatcher)
    late = add(outbox, "clinic", "late-code", ALPHA, priority=Priority.URGENT)
    outbox.drain(dispatcher)

    rows = outbox.rows()
    assert rows[code].status == rows[late].status == Status.ACCEPTED
    normal = [rows[f"clinic-{n}"].status for n in range(3)]
    assert normal == [Status.ACCEPTED, Status.PENDING, Status.PENDING]
    assert counts(outbox) == {(today, "clinic"): (3, 3)}  # the late code took it past the limit


def test_without_the_exemption_urgent_messages_wait_too(outbox: Outbox) -> None:
    enqueue(outbox, "clinic", 2, 100)
    code = add(outbox, "clinic", "code", ALPHA, priority=Priority.URGENT)
    dispatcher = outbox.dispatcher(
        OUTBOX_DAILY_QUOTAS="clinic=2", OUTBOX_QUOTA_EXEMPT_URGENT="false"
    )

    outbox.drain(dispatcher)

    rows = outbox.rows()
    assert rows[code].status == Status.ACCEPTED  # urgent first, then the oldest
    assert [rows[f"clinic-{n}"].status for n in range(2)] == [Status.ACCEPTED, Status.PENDING]


def test_a_resend_counts_nothing_more(outbox: Outbox) -> None:
    keys = enqueue(outbox, "clinic", 3, 100)
    dispatcher = outbox.dispatcher(OUTBOX_DAILY_QUOTAS="clinic=3")
    outbox.sandbox.set_faults(outage=True)  # 503s: released, no attempt spent, sent again

    assert dispatcher.dispatch_once().released == 3
    outbox.sandbox.set_faults(outage=False)
    outbox.settle(dispatcher)

    assert {outbox.row(key).status for key in keys} == {Status.ACCEPTED}
    assert outbox.sandbox.request_count >= 2
    assert list(counts(outbox).values()) == [(3, 3)]


def test_segments_count_where_the_outbox_knows_them(outbox: Outbox) -> None:
    long_one = add(outbox, "shop", "long", two_parts(1))
    short = add(outbox, "shop", "short", ALPHA)
    longer = add(outbox, "shop", "long-again", two_parts(2))
    template = add(outbox, "shop", "template", TEMPLATE)
    today = outbox.clock.now.date()
    dispatcher = outbox.dispatcher(OUTBOX_DAILY_SEGMENT_QUOTAS="shop=3")

    outbox.drain(dispatcher)

    rows = outbox.rows()
    assert rows[long_one].status == rows[short].status == Status.ACCEPTED
    assert rows[longer].status == Status.PENDING
    # Three parts used up: nothing of the shop's goes, not even a text of unknown length.
    assert rows[template].status == Status.PENDING
    assert counts(outbox) == {(today, "shop"): (2, 3)}


def test_a_raw_sql_rows_segments_count_from_its_text(outbox: Outbox) -> None:
    cast = "CAST(:content AS jsonb)" if outbox.engine.dialect.name == "postgresql" else ":content"
    insert = text(
        "INSERT INTO outbox_messages (client_message_id, recipient, content, tenant) "
        f"VALUES ('raw', :recipient, {cast}, 'shop')"
    )
    with outbox.engine.begin() as connection:
        connection.execute(insert, {"recipient": recipient(7), "content": json.dumps(two_parts(3))})
    outbox.drain(outbox.dispatcher(OUTBOX_DAILY_SEGMENT_QUOTAS="shop=5"))
    assert outbox.row("raw").status == Status.ACCEPTED
    assert list(counts(outbox).values()) == [(1, 2)]


def test_the_quota_day_follows_its_time_zone_and_an_expiring_message_fails(outbox: Outbox) -> None:
    stockholm = ZoneInfo("Europe/Stockholm")
    day = outbox.clock.now.astimezone(stockholm).date()
    if datetime.combine(day, time(23, 30), stockholm) <= outbox.clock.now:
        day += timedelta(days=1)
    outbox.clock.move_to(datetime.combine(day, time(23, 30), stockholm).astimezone(UTC))
    enqueue(outbox, "clinic", 1, 100)
    soon = add(outbox, "clinic", "soon", ALPHA, expires_at=outbox.clock.now + timedelta(minutes=20))
    later = add(outbox, "clinic", "later", ALPHA)
    dispatcher = outbox.dispatcher(
        OUTBOX_DAILY_QUOTAS="clinic=1",
        OUTBOX_QUOTA_TIME_ZONE="Europe/Stockholm",
        OUTBOX_MAX_AGE_SECONDS=86_400 * 2,  # the clock may be a day on from when they were due
    )

    outbox.drain(dispatcher)

    midnight = datetime.combine(day + timedelta(days=1), time(0), stockholm).astimezone(UTC)
    rows = outbox.rows()
    assert (rows[soon].status, rows[soon].attempts) == (Status.FAILED, 0)
    assert (
        rows[soon].last_error == f"expired: daily quota used up until {midnight:%Y-%m-%d %H:%M} UTC"
    )
    assert (rows[later].status, rows[later].next_attempt_at) == (Status.PENDING, midnight)
    assert counts(outbox) == {(day, "clinic"): (1, 1)}


def test_a_booking_refused_again_and_again_waits_a_moment_uncounted(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = enqueue(outbox, "clinic", 2, 100)
    dispatcher = outbox.dispatcher(OUTBOX_DAILY_QUOTAS="clinic=10")
    monkeypatch.setattr(quotas, "MAX_TRIES", 0)  # as if other workers won every try

    summary = dispatcher.dispatch_once()

    assert (summary.claimed, summary.accepted, summary.policy["over_quota"]) == (2, 0, 2)
    soon = outbox.clock.now + timedelta(seconds=1)
    for key in keys:
        row = outbox.row(key)
        assert (row.status, row.attempts, row.next_attempt_at) == (Status.PENDING, 0, soon)
        assert row.last_error.startswith("held: daily quota counter busy until ")
    monkeypatch.undo()
    outbox.settle(dispatcher)
    assert {outbox.row(key).status for key in keys} == {Status.ACCEPTED}
    assert list(counts(outbox).values()) == [(2, 2)]
