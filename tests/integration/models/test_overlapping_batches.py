"""Two producers writing the same ids at once (a retried job beside the first try) end in
success or DuplicateMessage, never in a deadlock (PostgreSQL: SQLite writers take turns)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from models import DuplicateMessage, enqueue_many

CONTENT = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John"]}
COUNT = 3_000


def batch(order: range) -> list[dict[str, Any]]:
    return [
        {"recipient": "46701234567", "content": CONTENT, "client_message_id": f"job-{index}"}
        for index in order
    ]


@pytest.mark.parametrize("if_exists", ["return", "raise"])
def test_two_producers_with_the_same_ids_in_opposite_orders_do_not_deadlock(
    postgres_engine: Engine, if_exists: Any
) -> None:
    orders = [range(COUNT), range(COUNT - 1, -1, -1)]
    start = threading.Barrier(len(orders))
    outcomes: list[object] = []

    def produce(order: range) -> None:
        try:
            with Session(postgres_engine) as session:
                start.wait()
                inserted = enqueue_many(session, batch(order), if_exists=if_exists)
                session.commit()
            outcomes.append(len(inserted))
        except Exception as error:  # the outcome is what the test judges
            outcomes.append(error)

    threads = [threading.Thread(target=produce, args=(order,)) for order in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert all(isinstance(failure, DuplicateMessage) for failure in failures), failures
    inserted = sorted(o for o in outcomes if isinstance(o, int))
    assert sum(inserted) == COUNT
    with postgres_engine.connect() as connection:
        count = connection.scalar(text("SELECT count(*) FROM outbox_messages"))
    assert count == COUNT
