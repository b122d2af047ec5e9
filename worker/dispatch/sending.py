"""Sending one claimed batch: requests with deadlines, splits, and a lone bad message found.

- Every request has a wall-clock deadline: the client's timeout, cut to the batch's lease (no
  request is in flight when the lease ends) and to the earliest `expires_at` in it (no message
  reaches the API after its expiry), and a probe's to its lease (no other probe goes out beside
  it). A request that cannot get a useful deadline is not made: one shorter than an answer of
  its batch took would time out at the API, and be sent again. A split cut short so leaves the
  half known to hold the bad message suspect, for the next batch to send alone.
- A 400 from the API, or too many items or bytes, splits the request in halves until the bad
  message is alone; a too-large batch halving its way down gives way to urgent rows due.
- A failure that says the API is unavailable (a 502 or 503, no connection made) is never a
  message's: the gate counts it, and no attempt is spent nor suspicion raised.
- Another request-level failure (500, timeout) while the API answers other requests is a
  message's doing: the request is bisected until the message that draws it is alone, while
  its batch-mates go out at once. If both halves fail, or the API answers nobody else, it is
  the API's: nothing more is sent, and the gate counts it.
- A message in a request that failed without an answer while the API is seen answering, or
  alone, becomes a suspect (its suspicion, kept on the row, counts such requests; an answer
  sets it back to 0). Suspects go out after their batch's clean messages, each alone, least
  suspected first. A suspect's (or a 500's) lone failure never counts against the API: it
  spends an attempt, unless the API was seen failing for others within a probe interval
  (then it waits that long, unspent). A probe is the least suspected message.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Protocol

from sqlalchemy import Connection

from worker.clock import Clock
from worker.dispatch import reach
from worker.dispatch.claim import ClaimedRow, urgent_due_now
from worker.dispatch.gate import GateView
from worker.dispatch.gate.policy import Gate, Permit
from worker.dispatch.request_log import RequestRecord, answered_whole, both_taken
from worker.dispatch.screen import ISOLATED, MIN_REQUEST_WINDOW, Outgoing, drop_expiring
from worker.wiraya.results import (
    Answered,
    BadRequest,
    BatchTooLarge,
    Communication,
    MessageOutcome,
    RateLimited,
    Rejected,
    RequestFailure,
    SendResult,
    ServerError,
    TransportError,
    Unauthorized,
    Unknown,
)

# The record needs this much of the lease after the last request's deadline.
RECORD_MARGIN = timedelta(seconds=1)
# The outcome of a message an answer leaves out (one object: building it cleans its reason).
NO_RESULT = Unknown("no result for this message in the API's answer")


class Sender(Protocol):
    """What sending needs of the API client."""

    def send(self, batch: Sequence[Communication], *, deadline: float | None = None) -> SendResult:
        """Send one batch in one request that ends by ``deadline`` (on the monotonic clock)."""
        ...


class Flow(Enum):
    """How one request (and the splits it led to) ended."""

    OK = "ok"  # answered: every message has an outcome, or was split until it had one
    FAILED = "failed"  # a request-level failure; the gate has not been told yet
    STOP = "stop"  # nothing more may be sent for this batch


@dataclass
class BatchSend:
    """The answers gathered for one claimed batch, across its requests."""

    outcomes: dict[int, MessageOutcome] = field(default_factory=dict)
    poisoned: dict[int, str] = field(default_factory=dict)  # drew request failures alone
    expired: dict[int, str] = field(default_factory=dict)  # no request could end before expiry
    unresolved: list[ClaimedRow] = field(default_factory=list)  # unsent or unanswered
    waiting: dict[int, datetime] = field(default_factory=dict)  # suspects held back unspent
    # Per message, the requests holding it that failed without an answer.
    unanswered: Counter[int] = field(default_factory=Counter)
    failure: RequestFailure | None = None  # what stopped the batch, when something did
    reached: dict[int, str] = field(default_factory=dict)  # may be at Wiraya: why (see reach)
    requests: list[RequestRecord] = field(default_factory=list)


class BatchSender:
    """Sends one claimed batch as the answers require, and tells the gate every answer."""

    def __init__(
        self,
        sender: Sender,
        gate: Gate,
        connect: Callable[[], AbstractContextManager[Connection]],
        *,
        clock: Clock,
        timeout: timedelta,
        rng: random.Random,
        should_stop: Callable[[], bool],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sender = sender
        self.gate = gate
        self.connect = connect
        self.clock = clock
        self.timeout = timeout
        self.rng = rng
        self.should_stop = should_stop
        self.monotonic = monotonic

    def send(
        self,
        batch: list[Outgoing],
        permit: Permit,
        *,
        lease_end: datetime,
        on_settled: Callable[[BatchSend], None] = lambda sent: None,
        sender: Sender | None = None,  # the batch's tenant's (its key); else the default one
    ) -> BatchSend:
        """Send ``batch`` (a probe sends one message first); return every answer gathered.

        ``on_settled`` is shown the answers so far once the clean messages are settled and
        before any suspect is sent (a suspect may hang for a whole timeout)."""
        run = _Run(self, permit, lease_end)
        run.sender = sender or self.sender
        batch = sorted(batch, key=lambda outgoing: outgoing.order)
        if permit.probe is not None and batch:
            # The probe asks whether the API answers: the least suspected message, alone.
            probe, rest = batch[:1], batch[1:]
            answered = run.send_and_settle(probe) is Flow.OK and run.answered_here
            reopened = _reopened(run) if answered else None
            if reopened is not None:
                run.permit = reopened  # open: the rest goes out
                run.send_all(rest, on_settled)
            else:  # no answer (a message judged alone, or expired, proves nothing of the API)
                _proved_nothing(run)  # or one older than a failure counted meanwhile
                run.sent.unresolved += [outgoing.row for outgoing in rest]
        else:
            run.send_all(batch, on_settled)
        return run.sent


class _Run:
    """One batch's send in progress."""

    def __init__(self, sending: BatchSender, permit: Permit, lease_end: datetime) -> None:
        self.sending = sending
        self.sender = sending.sender  # the batch's tenant's may replace it
        self.permit = permit
        self.lease_end = lease_end
        self.sent = BatchSend()
        self.answered_here = False  # some request of this batch was answered
        self.slowest_answer = MIN_REQUEST_WINDOW  # no request starts with less time than this

    def api_answers(self) -> bool:
        """Whether this batch had an answer, or the gate's last news of the API is one."""
        return self.answered_here or self.permit.view.answered_since_failure()

    def send_all(self, batch: list[Outgoing], on_settled: Callable[[BatchSend], None]) -> None:
        """Clean messages near expiry first, in a request of their own; then the other clean
        ones; then each suspect alone, in ``batch``'s order. What a stop leaves is released."""
        horizon = self.sending.clock() + self.sending.timeout
        clean = [o for o in batch if not o.suspicion]
        soon = [o for o in clean if o.expires_at is not None and o.expires_at < horizon]
        later = [o for o in clean if o.expires_at is None or o.expires_at >= horizon]
        groups = [soon, later, *([o] for o in batch if o.suspicion)]
        for number, group in enumerate(groups):
            if number == 2 and (soon or later):
                on_settled(self.sent)
            if group and self.send_and_settle(group) is Flow.STOP:
                for rest in groups[number + 1 :]:
                    self.stop(rest)
                return

    def send_and_settle(self, batch: list[Outgoing]) -> Flow:
        """Send, and settle a request-level failure: the message's doing, or the API's."""
        flow, started = self.send(batch)
        if flow is not Flow.FAILED:
            return flow
        if len(batch) > 1 and self.api_answers():
            return self.isolate(batch)
        served = isinstance(self.sent.failure, ServerError)  # the API's server ran it
        if len(batch) == 1 and (batch[0].suspicion or served):
            return self.suspect_alone(batch, started)
        if self.count_failure(started):
            return self.stop(batch)
        return self.guilty(batch)  # the API answered others while this request failed

    def suspect_alone(self, batch: list[Outgoing], started: datetime) -> Flow:
        """A suspect failed alone: its doing unless the API was seen failing for others within
        a probe interval (then it waits, unspent); never counted against the API."""
        until = _judged_at(self.permit.view, self.sending.gate.settings.probe_interval)
        if self.api_answers() or until is None or started >= until:
            return self.guilty(batch)
        self.sent.waiting[batch[0].id] = until
        return self.stop(batch)

    def isolate(self, batch: list[Outgoing]) -> Flow:
        """Bisect a failing request: the half that fails alone holds the bad message."""
        shuffled = list(batch)
        self.sending.rng.shuffle(shuffled)  # two bad messages do not stay in one half
        middle = len(shuffled) // 2
        first, second = shuffled[:middle], shuffled[middle:]
        first_flow, first_started = self.send(first)
        if first_flow is Flow.STOP:
            return self.stop(second)
        second_flow, started = self.send(second)
        if second_flow is Flow.STOP and first_flow is Flow.FAILED and len(first) == 1:
            self.suspect_alone(first, first_started)  # it failed alone: judged as alone
            return Flow.STOP
        if second_flow is Flow.STOP:
            return self.stop(first) if first_flow is Flow.FAILED else Flow.STOP
        if first_flow is Flow.FAILED and second_flow is Flow.FAILED:
            if self.count_failure(started):
                return self.stop(first + second)  # both halves failed: the API, not a message
            if self.guilty(first) is Flow.STOP:
                return self.stop(second)
            return self.guilty(second)
        if first_flow is Flow.FAILED:
            return self.guilty(first)
        if second_flow is Flow.FAILED:
            return self.guilty(second)
        return Flow.OK

    def guilty(self, batch: list[Outgoing]) -> Flow:
        """A set with a message that fails every request it is in; alone, it spends an attempt."""
        if len(batch) > 1:
            return self.isolate(batch)
        failure, self.sent.failure = self.sent.failure, None
        reason = _describe(failure) if failure else "RequestFailure: a request-level failure"
        self.sent.poisoned[batch[0].id] = f"{ISOLATED}: {reason}"
        return Flow.OK

    def count_failure(self, started: datetime) -> bool:
        reason = _describe(self.sent.failure) if self.sent.failure else "request failed"
        with self.sending.connect() as connection:
            return self.sending.gate.failed(
                connection, self.permit, started=started, reason=reason, now=self.sending.clock()
            )

    def stop(self, batch: list[Outgoing]) -> Flow:
        self.sent.unresolved += [outgoing.row for outgoing in batch]
        return Flow.STOP

    def send(self, batch: list[Outgoing]) -> tuple[Flow, datetime]:
        """One request for ``batch`` (and the splits a 400 or a too-large answer asks for)."""
        now = self.sending.clock()
        batch = drop_expiring(batch, now, self.sent.expired)
        if not batch:
            return Flow.OK, now
        leases = [end - RECORD_MARGIN for end in (self.lease_end, self.permit.probe_until) if end]
        expiries = [o.expires_at for o in batch if o.expires_at is not None]
        bound = min([now + self.sending.timeout, *leases, *expiries])  # a probe's lease too
        if self.sending.should_stop() or bound - now < self.slowest_answer:
            self.stop(batch)
            return Flow.STOP, now
        result = self._request(batch, now, bound)
        return self._settle(batch, result, now), now

    def _request(self, batch: list[Outgoing], now: datetime, bound: datetime) -> SendResult:
        clock_started = self.sending.monotonic()
        deadline = clock_started + (bound - now).total_seconds()
        result = self.sender.send([outgoing.communication for outgoing in batch], deadline=deadline)
        seconds = self.sending.monotonic() - clock_started
        self.sent.requests.append(RequestRecord(now, len(batch), seconds, type(result).__name__))
        reach.note(self.sent.reached, batch, result)
        if not isinstance(result, TransportError):  # an answer: a shorter window would time out
            took = min(self.sending.clock() - now, self.sending.timeout)
            self.slowest_answer = max(self.slowest_answer, took)
        return result

    def _settle(self, batch: list[Outgoing], result: SendResult, started: datetime) -> Flow:
        now = self.sending.clock()
        gate, permit = self.sending.gate, self.permit
        if isinstance(result, Answered):
            answers, outcomes = result.outcomes, self.sent.outcomes
            for outgoing in batch:
                cmid = outgoing.communication.client_message_id
                outcomes[outgoing.id] = answers.get(cmid, NO_RESULT)
            self.answered_here = True
            with self.sending.connect() as connection:
                gate.answered(connection, permit, started=started, size=len(batch), now=now)
            return Flow.OK
        if isinstance(result, BatchTooLarge | BadRequest):
            if permit.probe is not None:  # its one message judged alone: an answer under its key
                self.answered_here = True
                with self.sending.connect() as connection:
                    gate.answered(connection, permit, started=started, size=0, now=now)
            return self._split(batch, result, now)
        self.sent.failure, reason = result, _describe(result)
        if isinstance(result, RateLimited):
            with self.sending.connect() as connection:
                gate.rate_limited(
                    connection, permit, retry_after=result.retry_after, reason=reason, now=now
                )
            return self.stop(batch)
        if isinstance(result, Unauthorized):
            with self.sending.connect() as connection:
                gate.refused(
                    connection,
                    permit,
                    status=result.status,
                    reason=reason,
                    started=started,
                    now=now,
                )
            return self.stop(batch)
        if result.unavailable:  # an outage, whatever the request held: the API's, unspent
            self.count_failure(started)
            return self.stop(batch)
        if len(batch) == 1 or self.api_answers():  # not a bystander of an outage
            self.sent.unanswered.update(outgoing.id for outgoing in batch)
        return Flow.FAILED

    def _split(
        self, batch: list[Outgoing], result: BatchTooLarge | BadRequest, now: datetime
    ) -> Flow:
        """A 400 or a too-large answer: halves until the bad message is alone, which fails."""
        if len(batch) == 1:
            self.sent.outcomes[batch[0].id] = _rejection(result)
            return Flow.OK
        if isinstance(result, BatchTooLarge):
            with self.sending.connect() as connection:
                self.sending.gate.batches.too_large(connection, size=len(batch), now=now)
        middle = len(batch) // 2
        first, second = batch[:middle], batch[middle:]
        first_request = len(self.sent.requests)
        stopped = self.send_and_settle(first) is Flow.STOP
        second_request = len(self.sent.requests)
        _suspect_if_cut(self, batch, stopped, first_request)
        halved_again = isinstance(result, BatchTooLarge) and second_request > first_request + 1
        if stopped or (halved_again and urgent_due_now(self.sending.connect, self.sending.clock)):
            return self.stop(second)  # also for urgent rows due: the rest goes back unspent
        flow = self.send_and_settle(second)
        halves = (first_request, first), (second_request, second)
        if answered_whole(self.sent.requests, first_request, first):  # the bad one is in second
            _suspect_if_cut(self, second, flow is Flow.STOP, second_request)
        if isinstance(result, BatchTooLarge) and both_taken(self.sent.requests, *halves):
            _too_large_for_its_size(self.sending, len(second))
        return flow


def _reopened(run: _Run) -> Permit | None:
    """The permit for the rest of the probe's batch, on the gate as its answer left it; None
    when the answer did not reopen sending: one older than a failure another worker counted
    meanwhile leaves the circuit open (and that failure's pause on)."""
    gate = run.sending.gate
    with run.sending.connect() as connection:
        view = gate.read(connection, run.permit.view.key)
    permit = Permit(view, run.permit.size)
    return permit if gate.held_after_wait(view, permit, run.sending.clock()) is None else None


def _suspect_if_cut(run: _Run, held: list[Outgoing], stopped: bool, before: int) -> None:
    """A split stopped before its next request, by the lease rather than a shutdown: the
    messages known to hold the bad one go back suspect, for the next batch to send alone."""
    if stopped and len(run.sent.requests) == before and not run.sending.should_stop():
        run.sent.unanswered.update(outgoing.id for outgoing in held)


def _too_large_for_its_size(sending: BatchSender, halves: int) -> None:
    """Both halves of a too-large batch were taken whole: the limit follows the API down."""
    with sending.connect() as connection:
        sending.gate.batches.too_large_for_its_size(connection, halves=halves, now=sending.clock())


def _proved_nothing(run: _Run) -> None:
    """A probe that did not reopen sending frees its lease: the next may start at once when it
    sent nothing, a probe interval on when its request was made (each would spend an attempt)."""
    later = run.sending.clock() + run.sending.gate.settings.probe_interval
    with run.sending.connect() as connection:
        run.sending.gate.give_back(connection, run.permit, later if run.sent.requests else None)


def _judged_at(view: GateView, interval: timedelta) -> datetime | None:
    """When a lone failure is the message's: a probe interval after the API was seen failing."""
    return None if view.last_failure_at is None else view.last_failure_at + interval


def _rejection(result: BatchTooLarge | BadRequest) -> Rejected:
    """A message alone that the API refuses, with the API's reason."""
    too_large = isinstance(result, BatchTooLarge)
    return Rejected(f"too large: {result.reason}" if too_large else result.reason)


def _describe(failure: RequestFailure) -> str:
    return f"{type(failure).__name__}: {failure.reason}"
