"""Delivery reports do not outlive their messages, and unmatched ones go after their window."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, text

from models import Status
from tests.integration.reports.harness import (
    RECEIVED_LATER,
    accept,
    at,
    report,
    stored_reports,
    tracking,
    unmatched_count,
)
from worker.ops import changes, retention
from worker.reports.figures import UNMATCHED_COUNTED, delivery_figures
from worker.reports.storage import store_reports
from worker.runtime.housekeeping import Housekeeping
from worker.settings import DatabaseSettings

DAY = timedelta(days=1)


def made_up(first: int, count: int) -> list:  # type: ignore[type-arg]
    """Reports about tracking ids no message holds (from 10**6 on)."""
    return [report(10**6 + n) for n in range(first, first + count)]


def test_a_pruned_message_takes_its_reports_with_it(engine: Engine) -> None:
    kept, pruned = accept(engine, 2)
    store_reports(engine, [report(1), report(2), *made_up(0, 1)], received_at=RECEIVED_LATER)
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE outbox_messages SET accepted_at = :old WHERE id = :id"),
            {"old": at(-40 * 86400).replace(tzinfo=None), "id": pruned},
        )
    cutoff = at(-30 * 86400)
    assert changes.prune(engine, status=Status.ACCEPTED, cutoff=cutoff) == 1
    assert sorted((r.tracking_id, r.message_id) for r in stored_reports(engine)) == [
        (tracking(1), kept),
        (tracking(10**6), None),  # unmatched: its own window
    ]


def test_unmatched_reports_older_than_their_window_are_pruned_in_chunks(engine: Engine) -> None:
    (message,) = accept(engine, 1)
    store_reports(engine, made_up(0, 5), received_at=at(0))
    store_reports(engine, [report(1), *made_up(5, 2)], received_at=at(10 * 86400))
    with engine.begin() as connection:
        assert retention.prune_unmatched(connection, cutoff=at(86400), chunk=2) == 2
    assert changes.prune_unmatched_reports(engine, cutoff=at(86400)) == 3
    rows = stored_reports(engine)
    assert sorted(r.tracking_id for r in rows) == sorted(
        [tracking(1), tracking(10**6 + 5), tracking(10**6 + 6)]
    )
    assert [r.message_id for r in rows if r.tracking_id == tracking(1)] == [message]


def test_the_hourly_prune_deletes_unmatched_reports_past_the_setting(engine: Engine) -> None:
    settings = DatabaseSettings.from_environ(
        {"OUTBOX_UNMATCHED_REPORT_RETENTION_SECONDS": str(2 * 86400)}
    )
    store_reports(engine, made_up(0, 3), received_at=at(0))
    store_reports(engine, made_up(3, 1), received_at=at(2 * 86400))
    Housekeeping(engine, settings).prune(now=at(3 * 86400))
    assert [r.tracking_id for r in stored_reports(engine)] == [tracking(10**6 + 3)]


def test_the_unmatched_count_reads_no_further_than_its_cap(engine: Engine) -> None:
    store_reports(engine, made_up(0, UNMATCHED_COUNTED + 5), received_at=RECEIVED_LATER)
    assert unmatched_count(engine) == UNMATCHED_COUNTED + 5
    figures = delivery_figures(engine)
    assert figures.unmatched_reports == UNMATCHED_COUNTED
    assert f"{UNMATCHED_COUNTED:,}+" in "\n".join(figures.lines())
