"""No host's clock is the outbox's clock (design.md 5a, invariant 8).

Three hosts share one PostgreSQL outbox under a request rate: one whose wall clock is 10
minutes behind, one 10 minutes ahead, one right. Only the hosts' wall clocks are skewed (the
database's clock is real): each dispatcher runs as in production, on the outbox's time.
On SQLite the database's clock is the host's: a step back of it is a step back of the
outbox's time, after which a slot cursor booked before the step holds nothing.
"""

from __future__ import annotations

import contextvars
import itertools
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, tzinfo

import pytest
from sqlalchemy import Engine, text

import worker.clock
from sandbox.testing import RunningSandbox
from tests.integration.dispatch.harness import Outbox
from worker.dispatch.dispatcher import Dispatcher
from worker.dispatch.sending import Sender
from worker.wiraya.results import Communication, SendResult

HOST_SKEW: contextvars.ContextVar[timedelta] = contextvars.ContextVar(
    "host_skew", default=timedelta(0)
)
SKEWS = {"behind": timedelta(minutes=-10), "ahead": timedelta(minutes=10), "right": timedelta(0)}
RATE = 4.0  # requests per second across all hosts
# Seconds: what a request may start late after its slot (reading the gate, screening) on a
# loaded machine; the hosts' readings of the database's clock differ by far less.
SLACK = 0.15


class _HostDatetime(datetime):
    """`datetime` whose now() is this host's wall clock: the real one plus the host's skew."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
        return datetime.now(tz) + HOST_SKEW.get()


@pytest.fixture
def skewed_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker.clock, "datetime", _HostDatetime)


@contextmanager
def on_host(name: str) -> Iterator[None]:
    token = HOST_SKEW.set(SKEWS[name])
    try:
        yield
    finally:
        HOST_SKEW.reset(token)


class Stamped:
    """Notes the moment (monotonic, shared by every host here) each request starts."""

    def __init__(self, inner: Sender) -> None:
        self.inner = inner
        self.starts: list[float] = []

    def send(self, batch: Sequence[Communication], *, deadline: float | None = None) -> SendResult:
        self.starts.append(time.monotonic())
        return self.inner.send(batch, deadline=deadline)


def _database_now(engine: Engine) -> datetime:
    with engine.connect() as connection:
        moment: datetime = connection.scalar(text("SELECT clock_timestamp()"))
    return moment


def _hosts(outbox: Outbox, sender: Stamped) -> dict[str, Dispatcher]:
    settings = outbox.settings(OUTBOX_BATCH_SIZE=1, OUTBOX_RATE_LIMIT=RATE)
    sender.inner = outbox.client(settings)
    hosts = {}
    for name in SKEWS:
        with on_host(name):  # built as in production: no clock injected
            hosts[name] = Dispatcher(settings, outbox.engine, sender, rng=random.Random(1))
    return hosts


def test_the_host_clock_skew_is_checked_by_this_test(skewed_hosts: None) -> None:
    with on_host("ahead"):
        ahead = worker.clock.utc_now()
    assert ahead - worker.clock.utc_now() > timedelta(minutes=9)


def test_hosts_with_skewed_clocks_never_stall_nor_pass_a_pause_or_the_rate(
    postgres_engine: Engine, sandbox: RunningSandbox, skewed_hosts: None
) -> None:
    outbox = Outbox(postgres_engine, sandbox)
    try:
        outbox.enqueue_ordinary(15)
        sender = Stamped(sandbox)  # type: ignore[arg-type]
        hosts = _hosts(outbox, sender)

        # A pause another worker set: no host sends before it ends, whatever its clock says.
        outbox.set_gate(paused_until=_database_now(postgres_engine) + timedelta(minutes=1))
        for name, dispatcher in hosts.items():
            with on_host(name):
                assert dispatcher.dispatch_once().state == "paused", name
                assert dispatcher.due_batches(dispatcher.clock()) == 0, name
        assert sender.starts == []
        outbox.set_gate(paused_until=None)

        # Under the rate every host sends in turn: none finds the next slot out of reach.
        for _ in range(5):
            for name, dispatcher in hosts.items():
                with on_host(name):
                    assert dispatcher.due_batches(dispatcher.clock()) >= 1, name
                    summary = dispatcher.dispatch_once()
                assert (summary.state, summary.accepted) == ("sent", 1), (name, summary)

        # No burst past the rate: n requests later is at least n slots later (give or take
        # the work between a slot and its request).
        starts = sender.starts
        for i, j in itertools.combinations(range(len(starts)), 2):
            assert starts[j] - starts[i] >= (j - i) / RATE - SLACK, (i, j, starts)
    finally:
        outbox.close()


def test_a_slot_cursor_booked_before_the_clock_stepped_back_holds_nothing(outbox: Outbox) -> None:
    # The outbox's clock stepped back 10 minutes (NTP, on SQLite's one host) after a booking.
    outbox.enqueue_ordinary(3)
    outbox.set_gate(rate=0.5, next_send_at=outbox.clock.now + timedelta(minutes=10))
    dispatcher = outbox.dispatcher()

    assert dispatcher.due_batches(outbox.clock.now) == 1
    summary = dispatcher.dispatch_once()

    assert (summary.state, summary.accepted) == ("sent", 3)
    assert outbox.gate().next_send_at == outbox.clock.now + timedelta(seconds=2)  # from now
