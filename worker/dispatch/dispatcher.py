"""The dispatcher: claim a batch of due rows, screen it, send it, record every outcome.

No Celery here: a dispatch is one call of ``Dispatcher.dispatch``, run by a Celery task in
production and directly by tests. No transaction is open during an HTTP call: the claim commits
first, under a lease and a token, and the results are written in one statement guarded by that
token. The gate is told every answer as it comes, each note a statement of its own: a crash
between a note and the record loses at most that note, which the next answer makes again, and
the record never depends on the gate.

A dispatch sends batch after batch while they come back full, for up to two seconds: a Celery
task per batch would cost broker round trips, a stored result and events for every batch. Each
batch keeps its own claim, lease, deadline and record, so a crash loses at most the batch under
way.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from worker.api_keys import key_fingerprint
from worker.clock import Clock
from worker.database import OnFirstUse, connect_on_first_use, outbox_clock
from worker.dispatch.claim import ClaimedRow, new_token, tenant_of
from worker.dispatch.floors import LaneFloors
from worker.dispatch.gate.pacing import SLOT_TOO_FAR
from worker.dispatch.gate.policy import Gate, Permit
from worker.dispatch.outcomes import (
    Outcomes,
    released,
    results_of,
    take_settled,
    unsent_failure,
)
from worker.dispatch.permits import claim_under, due_batches, turn_and_permit, under_rows_key
from worker.dispatch.policy import rules as policy_rules
from worker.dispatch.policy.quotas import TenantQuotas
from worker.dispatch.record import RowResult
from worker.dispatch.recorder import Recorder
from worker.dispatch.screen import Outgoing, Screened, Unsendable, screen
from worker.dispatch.sending import BatchSend, BatchSender, Sender
from worker.dispatch.summary import BatchState, BatchSummary
from worker.dispatch.tenant_senders import TenantSenders, no_key_reason
from worker.dispatch.turns import ALL_HELD, TenantTurns
from worker.settings import Settings
from worker.tracing import batch_span

# How long one dispatch keeps sending full batches back to back before it hands over.
DISPATCH_BUDGET = timedelta(seconds=2)
# A probe whose claimed rows could none be sent claims again, this many times at most.
PROBE_CLAIMS = 5


class Dispatcher:
    """Runs one batch at a time against the outbox database and a Sender, on the outbox's time."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        sender: Sender,
        *,
        clock: Clock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_full_batch: Callable[[], object] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        should_stop: Callable[[], bool] = lambda: False,
        sender_for_key: Callable[[str], Sender] | None = None,
    ) -> None:
        self.settings = settings
        # Each statement stands alone (claim, record, gate notes): autocommit spares BEGIN/COMMIT.
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.clock = clock or outbox_clock(engine, monotonic)  # by default the database's
        self.monotonic = monotonic
        # The OS's randomness: a dispatcher built before a fork gives each process its own.
        self.rng = rng or random.SystemRandom()
        self.on_full_batch = on_full_batch
        self.sleep = sleep
        self.should_stop = should_stop
        self.key = key_fingerprint(settings.api_key, settings.fingerprint_salt)
        self.gate = Gate(settings, self.key, self.rng)
        self.outcomes = Outcomes(settings, self.rng)
        self.floors = LaneFloors()  # where this process's claims of each lane ended
        named = bool(settings.tenant_weights or settings.wiraya_api_keys or settings.quotas)
        self.turns = TenantTurns(settings.tenant_weights, in_force=named)
        self.quotas = TenantQuotas(settings.quotas)  # the daily quotas this process counts
        self.recorder = Recorder(engine, settings.lease, self.clock, sleep, monotonic)
        # Each tenant's batches go out under its own key (docs/tenants.md).
        self.senders = TenantSenders(settings, sender_for_key)
        self.batch_sender = BatchSender(
            sender,
            self.gate,
            connect_on_first_use(self.engine),  # most answers change nothing in the gate
            clock=self.clock,
            timeout=settings.wiraya_timeout,
            rng=self.rng,
            should_stop=should_stop,
            monotonic=monotonic,
        )

    @property
    def sender(self) -> Sender:
        """The API client every request of this dispatcher goes through."""
        return self.batch_sender.sender

    @sender.setter
    def sender(self, sender: Sender) -> None:
        self.batch_sender.sender = sender

    def dispatch(self, budget: timedelta = DISPATCH_BUDGET) -> BatchSummary:
        """Send batches back to back while each comes back full and sent, for up to ``budget``.

        Only the first full batch wakes another dispatch.
        """
        started = self.monotonic()
        summary = self.dispatch_once()
        deadline = started + budget.total_seconds()
        while (
            summary.state is BatchState.SENT
            and summary.full
            and self.monotonic() < deadline
            and not self.should_stop()
        ):
            summary.add(self.dispatch_once(wake=False))
        summary.seconds = round(self.monotonic() - started, 4)
        return summary

    def dispatch_once(self, *, wake: bool = True) -> BatchSummary:
        """Claim, screen, send and record one batch (a full one wakes another, with ``wake``)."""
        started = self.monotonic()
        if (held := self.recorder.held()) is not None:  # logged once, when records began to fail
            return BatchSummary(state=BatchState.PAUSED, alarm=held)
        summary = self._dispatch_once(wake)
        summary.seconds = round(self.monotonic() - started, 4)
        summary.log()
        return summary

    def due_batches(self, now: datetime, room: int | None = None) -> int:
        """How many dispatches the due rows call for, at most ``room`` (the parallel limit)."""
        return due_batches(self, now, self.settings.max_parallel if room is None else room)

    # -- one batch ------------------------------------------------------------------------

    def _dispatch_once(self, wake: bool) -> BatchSummary:
        if self.should_stop():
            return BatchSummary()
        now, token = self.clock(), new_token()
        # The claim's connection serves the sending policy's look-ups too; it goes back to the
        # pool before any wait or request, and the next statement takes one again.
        held = OnFirstUse(self.engine)
        with held:
            return self._batch(held, now, token, wake)

    def _batch(self, held: OnFirstUse, now: datetime, token: int, wake: bool) -> BatchSummary:
        connection = held.as_connection()
        permit, rows = self._claim(connection, now, token)
        if permit.probe is not None and not rows:
            self.gate.give_back(connection, permit)
        if not rows:
            state = BatchState.IDLE if permit.allowed else BatchState.PAUSED
            return BatchSummary(state=state, alarm=None if permit.allowed else permit.reason)
        summary = BatchSummary(batches=1)
        summary.note_claimed(rows)
        summary.full = len(rows) == permit.size and permit.probe is None
        if summary.full and wake and self.on_full_batch is not None:
            self.on_full_batch()  # more is due: let another worker start on it now
        wait = _wait_for_slot(self, held, permit, now) if permit.allowed else permit.reason
        if wait is not None:
            held.release()
            self.recorder.write_batch(summary, [released(row, None) for row in rows], token, now)
            if permit.probe is not None:  # it sent nothing: the next probe need not wait for it
                self.gate.give_back(held.as_connection(), permit)  # (its rows are free first)
            summary.state, summary.alarm = BatchState.PAUSED, wait
            return summary
        with batch_span(rows, summary):  # nothing at all unless tracing is on
            self._process(held, rows, permit, token, now, summary)
        return summary

    def _claim(
        self, connection: Connection, now: datetime, token: int
    ) -> tuple[Permit, list[ClaimedRow]]:
        """The gate's permit and the rows claimed under it (a changed gate is read again once)."""
        for _ in range(2):
            turn, permit = turn_and_permit(self, connection, now)
            if not permit.allowed or turn == ALL_HELD:
                return permit, []
            rows = claim_under(self, connection, permit, now, token, turn)
            if turn is None:
                permit = under_rows_key(self, connection, permit, rows, now)
            if rows or self.gate.read(connection, permit.view.key).unchanged_since(permit.view):
                return permit, rows
        return permit, []

    def _process(
        self,
        held: OnFirstUse,
        rows: list[ClaimedRow],
        permit: Permit,
        token: int,
        now: datetime,
        summary: BatchSummary,
    ) -> None:
        screened = self._screen(rows, permit, token, now, summary)
        screened = _with_policy(self, held.as_connection(), screened, now, summary)
        held.release()  # no connection is held during a request
        screened, sender = _tenant_sender(self.senders, screened)
        results = _unsent(screened, summary)
        if screened.outgoing:
            early = _record_first(self, screened.outgoing, results, summary, token, now)
            lease_end = now + self.settings.lease
            sent = self.batch_sender.send(
                screened.outgoing, permit, lease_end=lease_end, on_settled=early, sender=sender
            )
        else:
            sent = BatchSend()
            if permit.probe is not None:  # nothing could be sent: another worker may probe
                with self.engine.connect() as connection:
                    self.gate.give_back(connection, permit)
        if sent.unresolved and screened.outgoing:  # they counted: claimed again, whatever the quota
            self.quotas.forget(screened.outgoing[0].tenant)
        results += results_of(screened.outgoing, sent, self.outcomes, now=self.clock())
        summary.note_send(sent)
        self.recorder.write_batch(summary, results, token, now)

    def _screen(
        self,
        rows: list[ClaimedRow],
        permit: Permit,
        token: int,
        now: datetime,
        summary: BatchSummary,
    ) -> Screened:
        """Screen the claimed rows; a probe claims again while none of them can be sent, so it
        never stalls behind rows that fail on the way (they are recorded, and are no probe)."""
        screened = _screen_rows(self, rows, now)
        for _ in range(PROBE_CLAIMS - 1):
            if permit.probe is None or screened.outgoing or not rows:
                break
            failures = [unsent_failure(item.row, item.reason) for item in screened.unsendable]
            self.recorder.write_batch(summary, failures, token, now)
            with self.engine.connect() as connection:
                rows = claim_under(self, connection, permit, now, token, tenant_of(rows))
            summary.note_claimed(rows)
            screened = _screen_rows(self, rows, now)
        return screened


def _wait_for_slot(
    dispatcher: Dispatcher, held: OnFirstUse, permit: Permit, now: datetime
) -> str | None:
    """Book a request slot when a rate is in force and wait for it (no connection held);
    why not, if not."""
    gate = dispatcher.gate
    wait = gate.pacing.book_slot(held.as_connection(), permit.view, now)
    if wait is None or wait <= timedelta(0):
        return SLOT_TOO_FAR if wait is None else None
    held.release()
    dispatcher.sleep(wait.total_seconds())
    view = gate.read(held.as_connection(), permit.view.key)
    return gate.held_after_wait(view, permit, dispatcher.clock())


def _screen_rows(dispatcher: Dispatcher, rows: list[ClaimedRow], now: datetime) -> Screened:
    settings = dispatcher.settings
    return screen(rows, now=now, max_age=settings.max_age, limits=settings.message_limits)


def _with_policy(
    dispatcher: Dispatcher,
    connection: Connection,
    screened: Screened,
    claimed_at: datetime,
    summary: BatchSummary,
) -> Screened:
    """The sending policy on a screened batch (docs/sending-policy.md), at the outbox's time
    now: the held are released unsent with the batch's record, the refused fail with the
    screen's failures. No request of the batch starts after its lease ends."""
    lease_end = claimed_at + dispatcher.settings.lease
    if not screened.outgoing:
        return screened
    now = dispatcher.clock()
    unsent = [item.row.id for item in screened.unsendable]
    verdict = policy_rules.apply(
        dispatcher.settings.policy,
        connection,
        screened.outgoing,
        now,
        unsent,
        lease_end,
        dispatcher.quotas,
    )
    summary.note_policy(verdict)
    return Screened(verdict.outgoing, screened.unsendable + verdict.failed)


def _tenant_sender(senders: TenantSenders, screened: Screened) -> tuple[Screened, Sender | None]:
    """The batch's tenant's sender (a claim takes one tenant's rows; None: the default one);
    without a key for the tenant its messages fail, the reason naming the tenant."""
    if not screened.outgoing:
        return screened, None
    tenant = screened.outgoing[0].tenant
    if senders.has_key(tenant):
        return screened, senders.sender(tenant)
    failed = [Unsendable(item.row, no_key_reason(tenant)) for item in screened.outgoing]
    return Screened([], screened.unsendable + failed), None


def _unsent(screened: Screened, summary: BatchSummary) -> list[RowResult]:
    """The rows that go nowhere this time: the screen's and the policy's failures, and the
    messages the policy holds (back to pending, no attempt spent)."""
    failed = [unsent_failure(item.row, item.reason) for item in screened.unsendable]
    return failed + summary.policy_held


def _record_first(
    dispatcher: Dispatcher,
    outgoing: list[Outgoing],
    unsent: list[RowResult],
    summary: BatchSummary,
    token: int,
    claimed_at: datetime,
) -> Callable[[BatchSend], None]:
    """What records a batch's settled rows (the unsendable, the clean messages' outcomes)
    before its suspects are sent, each of which may hang for a whole timeout."""

    def record(sent: BatchSend) -> None:
        settled = take_settled(outgoing, sent, dispatcher.outcomes, now=dispatcher.clock())
        dispatcher.recorder.write_batch(summary, unsent + settled, token, claimed_at)
        unsent.clear()  # written: the batch's last record leaves them out

    return record
