"""How a batch holds the pool's connections: none while a request is out or while the batch
waits for its slot (the claim's connection, kept for the sending policy, goes back first)."""

from __future__ import annotations

from sqlalchemy import Engine, event

from tests.integration.dispatch.harness import Outbox, WhileSending
from worker.dispatch.summary import BatchSummary


class InUse:
    """How many of an engine's connections are checked out now (any pool, SQLite's too)."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine.pool, "checkout", lambda *_: self.add(1))
        event.listen(engine.pool, "checkin", lambda *_: self.add(-1))

    def add(self, change: int) -> None:
        self.count += change


def test_no_connection_is_held_during_a_request(outbox: Outbox) -> None:
    outbox.enqueue_ordinary(5)
    dispatcher = outbox.dispatcher()
    in_use, held = InUse(outbox.engine), []

    def count_checked_out() -> BatchSummary:
        held.append(in_use.count)
        return BatchSummary()

    dispatcher.sender = WhileSending(dispatcher.sender, count_checked_out)
    assert dispatcher.dispatch_once().claimed == 5
    assert held == [0]


def test_no_connection_is_held_while_waiting_for_a_slot(outbox: Outbox) -> None:
    outbox.enqueue_ordinary(5)
    dispatcher = outbox.dispatcher(OUTBOX_RATE_LIMIT=1)
    in_use, held = InUse(outbox.engine), []

    def sleep(seconds: float) -> None:
        held.append(in_use.count)
        outbox.clock.advance(seconds)

    dispatcher.sleep = sleep
    assert dispatcher.dispatch_once().claimed == 5  # the first request takes the slot now
    outbox.enqueue_ordinary(5)
    assert dispatcher.dispatch_once().claimed == 5  # the next waits a second for its slot
    assert held == [0]
