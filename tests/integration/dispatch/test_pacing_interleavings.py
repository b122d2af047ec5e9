"""Per-recipient pacing across two workers on PostgreSQL, under any interleaving of their steps.

A Hypothesis state machine drives two real dispatchers on one outbox and the sandbox: messages
arrive for two recipients, either worker dispatches (or dispatches while the other's request is
in flight, after the other booked its recipients), and time moves in steps. Every request is
logged with the outbox's time when it starts; the invariant: two messages to one recipient
never start closer than the interval. At the end, time moves on until every message is
accepted: a paced message is never a stall.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, text

from sandbox.testing import RunningSandbox
from tests.integration.dispatch.harness import Outbox, WhileSending, recipient
from worker.dispatch.dispatcher import Dispatcher
from worker.dispatch.policy import pacing
from worker.dispatch.sending import Sender
from worker.wiraya.results import Communication, SendResult

pytestmark = pytest.mark.timeout(600)

INTERVAL = timedelta(seconds=6)
RECIPIENTS = (recipient(71), recipient(72))
PACED = {"OUTBOX_RECIPIENT_MIN_INTERVAL_SECONDS": INTERVAL.total_seconds()}


@dataclass
class Logged:
    """A sender that logs each request's start on the outbox's clock, then sends it."""

    inner: Sender
    now: Callable[[], datetime]
    starts: list[tuple[datetime, str]] = field(default_factory=list)

    def send(self, batch: Sequence[Communication], *, deadline: float | None = None) -> SendResult:
        self.starts += [(self.now(), item.recipient) for item in batch]
        return self.inner.send(batch, deadline=deadline)


def too_close(starts: list[tuple[datetime, str]]) -> list[tuple[str, datetime, datetime]]:
    """Every pair of successive requests to one recipient closer than the interval."""
    last: dict[str, datetime] = {}
    close = []
    for moment, to in sorted(starts):
        if to in last and moment - last[to] < INTERVAL:
            close.append((to, last[to], moment))
        last[to] = moment
    return close


class PacingInterleavings(RuleBasedStateMachine):
    """Two workers, two recipients, one interval."""

    engine: ClassVar[Engine]
    sandbox: ClassVar[RunningSandbox]

    def __init__(self) -> None:
        super().__init__()
        self.outbox = Outbox(self.engine, self.sandbox)
        self.log: list[tuple[datetime, str]] = []
        self.workers = [self._worker() for _ in range(2)]
        self.count = 0

    def _worker(self) -> Dispatcher:
        dispatcher = self.outbox.dispatcher(**PACED)
        logged = Logged(dispatcher.sender, self.outbox.clock)
        logged.starts = self.log
        dispatcher.sender = logged
        return dispatcher

    @initialize()
    def fresh_outbox(self) -> None:
        with self.engine.begin() as connection:
            connection.execute(text("DELETE FROM outbox_messages"))
            connection.execute(text("DELETE FROM outbox_recipient_pacing"))

    @rule(to=st.sampled_from(RECIPIENTS), many=st.integers(1, 3))
    def arrive(self, to: str, many: int) -> None:
        for _ in range(many):
            self.count += 1
            self.outbox.insert_raw(f"p{self.count}", to, ALPHA_TEXT)

    @rule(which=st.integers(0, 1))
    def dispatch(self, which: int) -> None:
        self.workers[which].dispatch_once()

    @rule(which=st.integers(0, 1))
    def dispatch_while_the_other_sends(self, which: int) -> None:
        worker, other = self.workers[which], self.workers[1 - which]
        inner = worker.sender
        worker.sender = WhileSending(inner, other.dispatch_once)
        try:
            worker.dispatch_once()
        finally:
            worker.sender = inner

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 5.9, 6.0, 7.5]))
    def time_passes(self, seconds: float) -> None:
        self.outbox.clock.advance(seconds)

    @invariant()
    def never_closer_than_the_interval(self) -> None:
        assert not too_close(self.log), too_close(self.log)

    def teardown(self) -> None:
        try:
            if self.count:
                self.outbox.settle(self.workers[0], rounds=400)
                assert not too_close(self.log), too_close(self.log)
        finally:
            self.outbox.close()


ALPHA_TEXT = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "Your table is ready"}

STATEFUL = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def test_two_workers_never_send_to_one_recipient_closer_than_the_interval(
    postgres_engine: Engine, sandbox: RunningSandbox
) -> None:
    PacingInterleavings.engine = postgres_engine
    PacingInterleavings.sandbox = sandbox
    run_state_machine_as_test(PacingInterleavings, settings=STATEFUL)


def test_the_check_catches_a_booking_that_ignores_the_other_worker(
    postgres_engine: Engine, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    def steps() -> None:
        PacingInterleavings.engine = postgres_engine
        PacingInterleavings.sandbox = sandbox
        machine = PacingInterleavings()
        try:
            machine.fresh_outbox()
            machine.arrive(RECIPIENTS[0], 1)
            machine.dispatch(0)
            machine.time_passes(1.0)
            machine.arrive(RECIPIENTS[0], 1)
            machine.dispatch_while_the_other_sends(1)
            machine.never_closer_than_the_interval()
        finally:
            machine.outbox.close()

    steps()  # booked in the shared table: the second message waits
    original = pacing.book

    def unconditional(connection, recipients, now, interval):  # type: ignore[no-untyped-def]
        return original(connection, recipients, now, timedelta(0))

    monkeypatch.setattr(pacing, "book", unconditional)
    with pytest.raises(AssertionError):
        steps()
