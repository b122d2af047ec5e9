"""`outbox cancel` beside a worker's claim, on real PostgreSQL: a row the claim holds while a
chunk waits for it leaves the chunk short, and the cancel must still reach the rest."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from models import SMSProject, enqueue_many
from worker.clock import utc_now
from worker.ops import cancel, writes
from worker.ops.selection import Selection

ROWS = 6


@pytest.fixture
def pending(postgres_engine: Engine) -> Iterator[Engine]:
    """ROWS pending messages, due now."""
    with Session(postgres_engine) as session, session.begin():
        enqueue_many(
            session,
            [
                {"recipient": f"4670123456{n}", "content": SMSProject(projectId=1)}
                for n in range(ROWS)
            ],
        )
    yield postgres_engine


def waiting_for_a_lock(engine: Engine) -> bool:
    with engine.connect() as connection:
        waiting = connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


def test_a_row_claimed_while_a_chunk_waits_for_it_does_not_end_the_cancel(
    pending: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writes, "CHUNK", 3)
    plan = cancel.plan_cancel(pending, Selection(), now=utc_now())
    assert plan.matched == ROWS
    first = 1  # the first row in the pending rows' lock order
    cancelled: list[int] = []
    with pending.connect() as claim:  # a worker's claim holding the first row in lock order
        claim.execute(
            text("SELECT id FROM outbox_messages WHERE id = :id FOR UPDATE"), {"id": first}
        )
        running = threading.Thread(
            target=lambda: cancelled.append(
                cancel.cancel(pending, plan, now=utc_now(), include_sent=False)
            )
        )
        running.start()
        deadline = time.monotonic() + 30
        while not waiting_for_a_lock(pending) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert waiting_for_a_lock(pending), "the cancel never waited for the claimed row"
        claim.execute(
            text(
                "UPDATE outbox_messages SET status = 'sending', attempts = attempts + 1, "
                "locked_until = now() + interval '2 minutes' WHERE id = :id"
            ),
            {"id": first},
        )
        claim.commit()
    running.join(timeout=30)

    assert cancelled == [ROWS - 1]  # every row but the one being sent, as the plan promised
    with pending.connect() as connection:
        left = connection.scalar(
            text("SELECT count(*) FROM outbox_messages WHERE status = 'pending'")
        )
    assert left == 0
