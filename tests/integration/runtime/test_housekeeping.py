"""Beat's housekeeping schedule in the database: due at once, hourly after, taken by one beat.

Time is passed in (``now``), so an hour passes without waiting for it; every statement runs on
a real PostgreSQL and SQLite outbox.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert, select, text

from models import Status, outbox_tenant_quotas
from worker.runtime.housekeeping import PRUNE, PRUNE_EVERY, PRUNE_HOLD, Housekeeping
from worker.settings import DatabaseSettings

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def housekeeping(engine: Engine) -> Housekeeping:
    return Housekeeping(engine, DatabaseSettings.from_environ({}))


def test_a_fresh_outbox_is_due_for_a_prune_and_only_one_beat_takes_it(engine: Engine) -> None:
    first, second = housekeeping(engine), housekeeping(engine)
    assert first.take_due(PRUNE, now=T0)
    assert not second.take_due(PRUNE, now=T0)  # a second beat during a deploy: not twice


def test_after_a_prune_the_next_is_due_an_hour_later_whatever_the_restarts(engine: Engine) -> None:
    beat = housekeeping(engine)
    assert beat.take_due(PRUNE, now=T0)
    beat.finish(PRUNE, now=T0 + timedelta(minutes=1))
    restarted = housekeeping(engine)  # nothing in memory: all it knows is in the database
    assert restarted.next_run(PRUNE) == T0 + timedelta(minutes=1) + PRUNE_EVERY
    assert not restarted.take_due(PRUNE, now=T0 + timedelta(minutes=59))
    assert restarted.take_due(PRUNE, now=T0 + timedelta(minutes=61))


def test_a_prune_that_never_finished_is_taken_again_after_its_hold(engine: Engine) -> None:
    stopped = housekeeping(engine)
    assert stopped.take_due(PRUNE, now=T0)  # and beat is stopped before it finishes
    later = housekeeping(engine)
    assert not later.take_due(PRUNE, now=T0 + PRUNE_HOLD - timedelta(seconds=1))
    assert later.take_due(PRUNE, now=T0 + PRUNE_HOLD)


def test_the_prune_deletes_accepted_rows_past_retention_and_books_the_next(engine: Engine) -> None:
    now = datetime.now(UTC)
    with engine.begin() as connection:
        for name, age in (("old", timedelta(days=31)), ("recent", timedelta(days=29))):
            connection.execute(
                text(
                    "INSERT INTO outbox_messages (client_message_id, recipient, content, status, "
                    "tracking_id, accepted_at) VALUES (:name, '46701234567', "
                    """'{"$type": "SMSProject", "projectId": 1}', :status, :tracking, :at)"""
                ),
                {
                    "name": name,
                    "status": Status.ACCEPTED.value,
                    "tracking": "0" * 32,
                    "at": (now - age).replace(tzinfo=None)
                    if engine.dialect.name == "sqlite"
                    else now - age,
                },
            )
    beat = housekeeping(engine)
    assert beat.take_due(PRUNE, now=now)
    assert beat.prune(now=now) == 1
    with engine.connect() as connection:
        assert connection.scalars(text("SELECT client_message_id FROM outbox_messages")).all() == [
            "recent"
        ]
    next_run = beat.next_run(PRUNE)
    assert next_run is not None and next_run >= now + PRUNE_EVERY


def test_the_prune_deletes_quota_counters_older_than_retention(engine: Engine) -> None:
    counters = outbox_tenant_quotas
    with engine.begin() as connection:
        connection.execute(
            insert(counters),
            [
                {"day": (T0 - age).date(), "tenant": "clinic", "messages": 1, "segments": 1}
                for age in (timedelta(days=32), timedelta(days=29), timedelta(0))
            ],
        )
    beat = housekeeping(engine)
    assert beat.take_due(PRUNE, now=T0)
    beat.prune(now=T0)  # OUTBOX_RETENTION_SECONDS: 30 days by default
    with engine.connect() as connection:
        days = connection.scalars(select(counters.c.day).order_by(counters.c.day)).all()
    assert days == [(T0 - timedelta(days=29)).date(), T0.date()]
