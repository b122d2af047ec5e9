"""Beat, as ops see it: no housekeeping tasks in Flower, and the prune on schedule across restarts.

Real `celery -A worker beat` and `worker` processes on the stack's private Redis. Beat looks for
due rows and queues `outbox.dispatch` itself, so an idle outbox runs no task at all, while
inserts still wake a dispatch at once and a backlog still drains. The hourly prune keeps its
schedule in the database: a beat restarted shortly before a prune is due still runs it then.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from celery import Celery
from sqlalchemy import text

from tests.e2e.harness import CELERY, Service, Stack, project_messages, wait_for

IDLE_LOOKS = 10  # beat's looks for due rows watched while nothing is due
LOOK = r"Sending due task|due batches: 0"


def tasks_run(stack: Stack) -> dict[str, int]:
    """Tasks the stack's workers have run so far, by name (celery inspect stats)."""
    app = Celery(broker=stack.broker_url)
    try:
        stats = app.control.inspect(timeout=5).stats() or {}
    finally:
        app.close()
    assert len(stats) == len(stack.workers), f"workers answering: {sorted(stats)}"
    totals: dict[str, int] = {}
    for worker in stats.values():
        for name, count in worker["total"].items():
            totals[name] = totals.get(name, 0) + int(count)
    return totals


def looks(beat: Service) -> int:
    """How often beat has looked for due rows and found none (or sent a tick)."""
    return len(re.findall(LOOK, beat.log.read_text(errors="replace")))


@pytest.mark.timeout(120)
def test_an_idle_outbox_runs_no_task_and_inserts_still_wake_dispatches(stack: Stack) -> None:
    stack.start_sandbox()
    stack.start_worker()
    # At DEBUG beat logs each look for due rows: what the test counts.
    argv = [CELERY, "-A", "worker", "beat", "-l", "debug"]
    beat = stack._service("beat", argv, stack.worker_env(OUTBOX_POLL_INTERVAL_SECONDS="0.2"))
    stack.beat = beat
    stack.restart(beat, r"beat: Starting")

    stack.enqueue(project_messages("first", 1))
    stack.wait_all_final(1, timeout=30)
    before = tasks_run(stack)
    seen = looks(beat)
    wait_for(lambda: looks(beat) >= seen + IDLE_LOOKS, timeout=30, what="beat's idle looks")
    assert tasks_run(stack) == before, "an idle outbox must add no task to Flower's history"

    stack.enqueue(project_messages("burst", 500))
    stack.wait_all_final(501, timeout=60)
    assert set(tasks_run(stack)) == {"outbox.dispatch"}


def add_accepted(stack: Stack, prefix: str, count: int, *, days_ago: int) -> None:
    """Accepted rows finished ``days_ago`` days ago (the default retention is 30 days)."""
    with stack.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO outbox_messages (client_message_id, recipient, content, status, "
                "tracking_id, accepted_at) "
                "SELECT :prefix || n, '46701234567', "
                """'{"$type": "SMSProject", "projectId": 1}', 'accepted', md5(n::text), """
                "now() - make_interval(days => :days) FROM generate_series(1, :count) AS n"
            ),
            {"prefix": f"{prefix}-", "count": count, "days": days_ago},
        )


def next_prune(stack: Stack) -> object:
    with stack.engine.connect() as connection:
        return connection.scalar(
            text("SELECT next_run_at FROM outbox_housekeeping WHERE job = 'prune'")
        )


def prune_finished(stack: Stack) -> bool:
    with stack.engine.connect() as connection:
        return (
            connection.scalar(
                text("SELECT finished_at FROM outbox_housekeeping WHERE job = 'prune'")
            )
            is not None
        )


@pytest.mark.timeout(120)
def test_a_beat_restarted_within_the_hour_prunes_when_due(stack: Stack) -> None:
    add_accepted(stack, "old", 30, days_ago=40)
    add_accepted(stack, "recent", 5, days_ago=1)
    beat = stack.start_beat()
    # Never pruned before: due at once. Its rows go first, then its schedule moves an hour on.
    wait_for(lambda: stack.count() == 5, timeout=30, what="the first prune at start")
    wait_for(lambda: prune_finished(stack), timeout=30, what="the first prune to finish")

    # The next one is an hour after it, whatever beat does meanwhile.
    pruned_at = next_prune(stack)
    beat.stop()
    add_accepted(stack, "older", 20, days_ago=40)
    stack.restart(beat, r"beat: Starting")
    assert next_prune(stack) == pruned_at, "a restart must not move the schedule"

    # Five seconds before the hour is up, beat restarts again: it prunes when the hour ends,
    # not an hour after its start.
    with stack.engine.begin() as connection:
        connection.execute(
            text("UPDATE outbox_housekeeping SET next_run_at = now() + :soon WHERE job = 'prune'"),
            {"soon": timedelta(seconds=5)},
        )
    beat.stop()
    stack.restart(beat, r"beat: Starting")
    wait_for(lambda: stack.count() == 5, timeout=30, what="the prune due after the restart")
    assert stack.count("client_message_id LIKE 'recent-%'") == 5
