"""Helpers for the dispatcher's integration tests: a movable clock, rows in, rows out, a sandbox.

The dispatcher runs in-process against a real database and the real sandbox over HTTP; only
time is faked, so no test waits out a lease, a backoff or a Retry-After.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, event, func, select, text, update
from sqlalchemy.orm import Session

from models import NewMessage, OutboxMessage, Status, enqueue_many
from sandbox.recipients import (
    HANG_SUFFIX,
    OMITTED_ONCE_SUFFIX,
    PERMANENT_SUFFIX,
    TRANSIENT_FOREVER_SUFFIX,
    TRANSIENT_TWICE_SUFFIX,
)
from sandbox.testing import RunningSandbox
from worker.dispatch import gate as gates
from worker.dispatch.claim import ClaimedRow, claim, new_token
from worker.dispatch.dispatcher import Dispatcher
from worker.dispatch.gate import GateView
from worker.dispatch.sending import Sender
from worker.dispatch.summary import BatchSummary
from worker.settings import Settings
from worker.wiraya.client import WirayaClient
from worker.wiraya.results import Communication, SendResult, TransportError

PERMANENT = "4670" + PERMANENT_SUFFIX
TRANSIENT_TWICE = "4670" + TRANSIENT_TWICE_SUFFIX
TRANSIENT_FOREVER = "4670" + TRANSIENT_FOREVER_SUFFIX
OMITTED_ONCE = "4670" + OMITTED_ONCE_SUFFIX
HANG = "4670" + HANG_SUFFIX
ALPHA = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "Your code is 123456"}

# Short durations keep arithmetic readable; none of them is ever waited out for real.
DEFAULTS: dict[str, Any] = {
    "WIRAYA_TIMEOUT_SECONDS": 5,
    "OUTBOX_BATCH_SIZE": 10,
    "OUTBOX_BACKOFF_BASE_SECONDS": 1,
    "OUTBOX_BACKOFF_MAX_SECONDS": 60,
    "OUTBOX_LEASE_SECONDS": 30,
    "OUTBOX_MAX_ATTEMPTS": 5,
    "OUTBOX_CIRCUIT_FAILURES": 3,
}


def recipient(number: int) -> str:
    """An ordinary recipient the sandbox accepts (never one of the test suffixes 0000001-4)."""
    return f"4670{5_000_000 + number:07d}"


class Clock:
    """The dispatcher's ``clock``: stands still until a test moves it."""

    def __init__(self) -> None:
        # A second ahead of the wall clock: rows inserted by the database just now are due.
        self.now = datetime.now(UTC) + timedelta(seconds=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def catch_up(self) -> datetime:
        """A second ahead of the wall clock again, if a slow test fell behind it."""
        return self.move_to(max(self.now, datetime.now(UTC) + timedelta(seconds=1)))

    def move_to(self, moment: datetime) -> datetime:
        assert moment >= self.now, "time only moves forward"
        self.now = moment
        return self.now


@dataclass
class Outbox:
    """One test's database, sandbox and clock, and the dispatchers it builds on them."""

    engine: Engine
    sandbox: RunningSandbox
    clock: Clock = field(default_factory=Clock)
    sleeps: list[float] = field(default_factory=list)
    clients: list[WirayaClient] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=False)

    def settings(self, **overrides: Any) -> Settings:
        """The test's settings; batches keep the size given unless OUTBOX_BATCH_SIZE_MAX is."""
        values = {
            **DEFAULTS,
            "OUTBOX_DATABASE_URL": self.url,
            "WIRAYA_BASE_URL": self.sandbox.url,
            **overrides,
        }
        values.setdefault("OUTBOX_BATCH_SIZE_MAX", values["OUTBOX_BATCH_SIZE"])
        return Settings.from_environ({}, **values)

    def client(self, settings: Settings) -> WirayaClient:
        client = WirayaClient.from_settings(settings)
        self.clients.append(client)
        return client

    def dispatcher(self, base_url: str | None = None, **overrides: Any) -> Dispatcher:
        """A dispatcher on the test clock; ``sleep`` records instead of sleeping."""
        if base_url is not None:
            overrides["WIRAYA_BASE_URL"] = base_url
        settings = self.settings(**overrides)
        return Dispatcher(
            settings,
            self.engine,
            self.client(settings),
            clock=self.clock,
            rng=random.Random(7),
            sleep=self.sleeps.append,
            sender_for_key=lambda key: self.keyed_client(settings, key),
        )

    def keyed_client(self, settings: Settings, api_key: str) -> WirayaClient:
        client = WirayaClient.for_key(settings, api_key)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()

    # -- rows in ------------------------------------------------------------------------

    def enqueue(self, *recipients: str, content: dict[str, Any] | None = None) -> list[str]:
        """Insert through the producer API; returns the clientMessageIds in order."""
        messages = [
            NewMessage.create(recipient=to, content=content or ALPHA, client_message_id=f"m{i:05d}")
            for i, to in enumerate(recipients, start=self._next_number())
        ]
        with Session(self.engine) as session, session.begin():
            return enqueue_many(session, messages)

    def enqueue_ordinary(self, count: int) -> list[str]:
        start = self._next_number()
        return self.enqueue(*(recipient(start + i) for i in range(count)))

    def insert_raw(self, client_message_id: str, to: str, content: object) -> None:
        """A plain three-column INSERT, as any language could write it: nothing validated."""
        cast = "CAST(:content AS jsonb)" if self.engine.dialect.name == "postgresql" else ":content"
        statement = text(
            "INSERT INTO outbox_messages (client_message_id, recipient, content) "
            f"VALUES (:id, :recipient, {cast})"
        )
        with self.engine.begin() as connection:
            connection.execute(
                statement,
                {"id": client_message_id, "recipient": to, "content": json.dumps(content)},
            )

    def _next_number(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.scalar(text("SELECT count(*) FROM outbox_messages")) or 0)

    # -- rows and gate out ----------------------------------------------------------------

    def rows(self) -> dict[str, OutboxMessage]:
        """Every row, keyed by clientMessageId (detached snapshots)."""
        with Session(self.engine, expire_on_commit=False) as session:
            found = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
            return {row.client_message_id: row for row in found}

    def row(self, client_message_id: str) -> OutboxMessage:
        return self.rows()[client_message_id]

    def gate(self) -> GateView:
        with self.engine.begin() as connection:
            return gates.read_gate(connection)

    def set_gate(self, **columns: Any) -> None:
        """Put the gate in a state directly (as another worker's notes would leave it)."""
        with self.engine.begin() as connection:
            gates.read_gate(connection)  # creates the row the first time
            connection.execute(
                update(gates.dispatch_gate).values(
                    version=gates.dispatch_gate.c.version + 1, **columns
                )
            )

    def claim_and_die(self, dispatcher: Dispatcher, limit: int = 10) -> list[ClaimedRow]:
        """What a worker killed after its claim committed leaves behind: rows under lease."""
        with self.engine.begin() as connection:
            version = gates.read_gate(connection).version
            return claim(
                connection,
                limit=limit,
                lease=dispatcher.settings.lease,
                now=self.clock.now,
                version=version,
                token=new_token(),
            )

    def drain(self, dispatcher: Dispatcher, *, limit: int = 100) -> list[BatchSummary]:
        """Dispatch until a dispatch finds nothing to do (the clock does not move)."""
        summaries: list[BatchSummary] = []
        for _ in range(limit):
            summary = dispatcher.dispatch_once()
            if summary.state == "idle":
                return summaries
            summaries.append(summary)
        raise AssertionError(f"still dispatching after {limit} batches: {summaries[-1]}")

    def settle(
        self,
        dispatcher: Dispatcher,
        *,
        rounds: int = 100,
        each_round: Callable[[], object] = lambda: None,
    ) -> list[BatchSummary]:
        """Dispatch until no row is pending or sending, moving the clock to the next moment
        anything can happen (a pause's or a probe's end, a row's due time or lease end) when a
        dispatch finds nothing to do. ``each_round`` runs before every dispatch (traffic
        arriving). Raises when rows are still unsettled after ``rounds`` dispatches."""
        summaries: list[BatchSummary] = []
        for _ in range(rounds):
            if not self.unsettled():
                return summaries
            each_round()
            summary = dispatcher.dispatch_once()
            summaries.append(summary)
            if summary.state in ("idle", "paused"):
                self.clock.move_to(max(self.clock.now, self.next_event()))
        unsettled = {m: (r.status, r.attempts, r.last_error) for m, r in self.unsettled().items()}
        raise AssertionError(f"unsettled after {rounds} dispatches: {unsettled}")

    def unsettled(self) -> dict[str, OutboxMessage]:
        """The rows still pending or sending."""
        rows = self.rows()
        return {m: r for m, r in rows.items() if r.status in (Status.PENDING, Status.SENDING)}

    def next_event(self) -> datetime:
        """The earliest moment after now at which a pause, a probe, a due time or a lease ends."""
        gate = self.gate()
        with self.engine.connect() as connection:
            due = connection.scalar(
                select(func.min(OutboxMessage.next_attempt_at)).where(
                    OutboxMessage.status == Status.PENDING
                )
            )
            lease = connection.scalar(
                select(func.min(OutboxMessage.locked_until)).where(
                    OutboxMessage.status == Status.SENDING
                )
            )
        moments = [gate.paused_until, gate.next_probe_at, gate.probe_until, due, lease]
        later = [moment for moment in moments if moment is not None and moment > self.clock.now]
        return min(later, default=self.clock.now + timedelta(seconds=1))


class WhileSending:
    """A sender that lets ``meanwhile`` run while its request is in flight, then sends.

    Stands for what other workers do during a slow HTTP call; ``seen`` keeps what it returned.
    """

    def __init__(self, inner: Sender, meanwhile: Callable[[], BatchSummary]) -> None:
        self.inner, self.meanwhile = inner, meanwhile
        self.seen: list[BatchSummary] = []

    def send(self, batch: Sequence[Communication], *, deadline: float | None = None) -> SendResult:
        self.seen.append(self.meanwhile())
        return self.inner.send(batch, deadline=deadline)


class Hanging:
    """A sender whose requests that get no answer cost the test clock their whole window.

    A request holding the sandbox's hanging recipient (…0000008) really goes out and really
    times out, after a tenth of a second instead of its window: the clock then moves by the
    window, as the wait would have taken it. Other requests go out as they are.
    """

    REAL_WAIT = 0.1

    def __init__(self, inner: Sender, clock: Clock) -> None:
        self.inner, self.clock = inner, clock

    def send(self, batch: Sequence[Communication], *, deadline: float | None = None) -> SendResult:
        if deadline is None or not any(c.recipient == HANG for c in batch):
            return self.inner.send(batch, deadline=deadline)
        window = deadline - time.monotonic()
        result = self.inner.send(batch, deadline=time.monotonic() + self.REAL_WAIT)
        assert isinstance(result, TransportError), result
        self.clock.advance(window)
        return result


def outage_from(sandbox: RunningSandbox, request: int) -> Callable[[], BatchSummary]:
    """For WhileSending: the sandbox goes down just before the ``request``-th request."""
    requests = 0

    def count_and_maybe_fail() -> BatchSummary:
        nonlocal requests
        requests += 1
        if requests == request:
            sandbox.set_faults(outage=True)
        return BatchSummary()

    return count_and_maybe_fail


@contextmanager
def outbox_statements(engine: Engine) -> Iterator[list[str]]:
    """Record every SQL statement sent to the database that mentions outbox_messages."""
    seen: list[str] = []

    def before_cursor_execute(*args: Any) -> None:
        statement = args[2]
        if "outbox_messages" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", before_cursor_execute)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before_cursor_execute)
