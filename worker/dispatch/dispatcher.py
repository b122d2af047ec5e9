"""The dispatcher: claim a batch of due rows, send it as one API call, record every outcome.

No Celery here: a dispatch is one call of ``Dispatcher.dispatch_once``, run by a Celery
task in production and directly by tests. No transaction is open during the HTTP call:
the claim commits first, under a lease, and the results are written in one statement.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, Engine

from models import InvalidMessage, Status, normalize_recipient, parse_content
from worker.dispatch import claim as claims
from worker.dispatch import gate as gates
from worker.dispatch import record as records
from worker.dispatch.claim import ClaimedRow
from worker.dispatch.gate import Gate
from worker.dispatch.record import RowResult
from worker.dispatch.retry import after_rate_limit, after_success, backoff, key_fingerprint
from worker.settings import Settings
from worker.wiraya.results import (
    Accepted,
    BadRequest,
    BatchTooLarge,
    Communication,
    Delivered,
    MessageOutcome,
    RateLimited,
    Rejected,
    RequestFailure,
    SendResult,
    Unauthorized,
    Unknown,
)

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
MAX_SLOT_WAIT = timedelta(seconds=15)
# How long one dispatch keeps sending full batches back to back before it hands over.
DISPATCH_BUDGET = timedelta(seconds=2)


class Sender(Protocol):
    """What the dispatcher needs of the API client."""

    def send(self, batch: Sequence[Communication]) -> SendResult: ...


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


@dataclass
class BatchSummary:
    """What one dispatch did: a Celery task's return value and the worker's log line."""

    state: str = "idle"  # idle | paused | sent | alarm
    batches: int = 0
    claimed: int = 0
    accepted: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    requests: int = 0
    seconds: float = 0.0
    alarm: str | None = None
    request_seconds: list[float] = field(default_factory=list)
    full: bool = False  # the last claim filled a batch: more may be due

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (request timings and the fullness flag left out)."""
        summary = asdict(self)
        del summary["request_seconds"], summary["full"]
        return summary

    def add(self, batch: BatchSummary) -> None:
        """Fold the next batch of the same dispatch into this summary.

        The state stays "sent" unless the next batch raised an alarm: a batch that found
        nothing due, or sending paused by another worker, ends the dispatch quietly.
        """
        for name in ("batches", "claimed", "accepted", "retried", "failed", "released", "requests"):
            setattr(self, name, getattr(self, name) + getattr(batch, name))
        self.request_seconds += batch.request_seconds
        self.full = batch.full
        if batch.state == "alarm":
            self.state, self.alarm = batch.state, batch.alarm


@dataclass
class Delivery:
    """The answers gathered for one claimed batch, across splits."""

    outcomes: dict[int, MessageOutcome] = field(default_factory=dict)
    failure: RequestFailure | None = None
    unresolved: list[ClaimedRow] = field(default_factory=list)
    too_large: int | None = None  # the smallest batch size the API called too large


class Dispatcher:
    """Runs one batch at a time against the outbox database and a Sender."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        sender: Sender,
        *,
        clock: Clock = utc_now,
        rng: random.Random | None = None,
        on_full_batch: Callable[[], object] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        # Every statement of a dispatch stands alone (the claim commits before the call,
        # the record is one statement): autocommit saves each a BEGIN and a COMMIT trip.
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.sender = sender
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_full_batch = on_full_batch
        self.sleep = sleep
        self.key = key_fingerprint(settings.api_key)

    def dispatch(self, budget: timedelta = DISPATCH_BUDGET) -> BatchSummary:
        """Send batches back to back while each comes back full and sent, for up to ``budget``.

        A Celery task per batch would cost broker round trips, a stored result and events
        for every 100 messages; a backlog drains faster when one task sends batch after
        batch. Each batch keeps its own claim, lease and record, so a crash still loses at
        most the batch under way. Only the first full batch wakes another dispatch.
        """
        started = time.monotonic()
        summary = self.dispatch_once()
        deadline = started + budget.total_seconds()
        while summary.state == "sent" and summary.full and time.monotonic() < deadline:
            summary.add(self.dispatch_once(wake=False))
        summary.seconds = round(time.monotonic() - started, 4)
        return summary

    def dispatch_once(self, *, wake: bool = True) -> BatchSummary:
        """Claim, screen, send and record one batch; return what happened.

        With ``wake``, a full claim asks for another dispatch to start on what remains.
        """
        started = time.monotonic()
        summary = BatchSummary()
        now = self.clock()
        # The gate and the claim share one connection. The record, after the HTTP call,
        # checks out a fresh one: the database may have dropped this one meanwhile.
        with self.engine.connect() as connection:
            gate = gates.read_gate(connection)
            size = self._permitted_batch_size(connection, gate, now)
            if size is None:
                summary.state, summary.alarm = "paused", gate.reason
                return summary
            rows = claims.claim(connection, limit=size, lease=self.settings.lease, now=now)
        if rows:
            summary.batches, summary.full = 1, len(rows) == size
            if summary.full and wake and self.on_full_batch is not None:
                self.on_full_batch()  # more is due: let another worker start on it now
            self._process(rows, gate, summary, lease_end=now + self.settings.lease)
        summary.seconds = round(time.monotonic() - started, 4)
        _log_summary(summary)
        return summary

    def due_batches(self, now: datetime) -> int:
        """How many batches are due now (capped at the parallel limit); 0 while paused."""
        with self.engine.begin() as connection:
            gate = gates.read_gate(connection)
            if self._paused(gate, now):
                return 0
            size = self._batch_size(gate)
            due = claims.count_due(connection, now=now, cap=size * self.settings.max_parallel)
        return -(-due // size)

    # -- the gate: may this worker send, and how much -----------------------------------

    def _has_new_key(self, gate: Gate) -> bool:
        """True when the API refused another key than this worker's: its pause is not ours."""
        return gate.refused_key is not None and gate.refused_key != self.key

    def _paused(self, gate: Gate, now: datetime) -> bool:
        """True while every worker must wait (a refused key pauses only that key)."""
        if self._has_new_key(gate):
            return False
        return gate.paused_until is not None and gate.paused_until > now

    def _batch_size(self, gate: Gate) -> int:
        """The configured batch size, or the smaller one the API imposed."""
        return min(self.settings.batch_size, gate.batch_limit or self.settings.batch_size)

    def _permitted_batch_size(
        self, connection: Connection, gate: Gate, now: datetime
    ) -> int | None:
        """The batch size to claim now, or None while sending is paused for everyone."""
        if self._paused(gate, now):
            return None
        circuit_open = gate.failures >= self.settings.circuit_failures
        if not self._has_new_key(gate) and (circuit_open or gate.refused_key == self.key):
            return 1 if self._take_probe(connection, gate, now) else None
        if gate.spacing and not self._wait_for_slot(connection, gate.spacing, now):
            return None
        return self._batch_size(gate)

    def _take_probe(self, connection: Connection, gate: Gate, now: datetime) -> bool:
        """While the circuit is open one worker at a time sends a single message."""
        hold = max(self._cooldown(gate.failures), self.settings.wiraya_timeout * 2)
        return gates.take_probe(connection, now=now, hold=hold)

    def _wait_for_slot(self, connection: Connection, spacing: timedelta, now: datetime) -> bool:
        """After a 429, wait for this worker's turn in the shared request spacing."""
        slot = gates.reserve_send_slot(connection, now=now, spacing=spacing)
        wait = slot - now
        if wait > MAX_SLOT_WAIT:
            return False
        if wait > timedelta(0):
            self.sleep(wait.total_seconds())
        return True

    def _cooldown(self, failures: int) -> timedelta:
        settings = self.settings
        return backoff(failures, base=settings.backoff_base, cap=settings.backoff_max, rng=self.rng)

    # -- one claimed batch ------------------------------------------------------------

    def _process(
        self, rows: list[ClaimedRow], gate: Gate, summary: BatchSummary, *, lease_end: datetime
    ) -> None:
        now = self.clock()
        summary.claimed = len(rows)
        results, outgoing = self._screen(rows, now)
        sendable = [row for row in rows if row.id in outgoing]
        # No request may still be under way when the lease ends and another worker
        # may claim the same rows.
        last_start = lease_end - self.settings.wiraya_timeout
        delivery = (
            self._deliver(sendable, outgoing, summary, last_start) if sendable else Delivery()
        )
        now = self.clock()
        results += [
            self._result(row, delivery.outcomes[row.id], now)
            for row in sendable
            if row.id in delivery.outcomes
        ]
        pause_until = self._pause_until(delivery.failure, gate, now)
        # A refused key pauses only that key (see _paused): its rows stay due, so a worker
        # holding another key sends them at once instead of after the refused key's pause.
        refused = isinstance(delivery.failure, Unauthorized)
        resume_at = now if refused or pause_until is None else pause_until
        results += [_released(row, resume_at, delivery.failure) for row in delivery.unresolved]
        with self.engine.begin() as connection:
            written = records.record(connection, results, now=now)
            self._update_gate(connection, delivery, gate, pause_until, summary, now)
        _count(results, written, summary)
        if delivery.failure is not None:
            summary.state, summary.alarm = "alarm", _describe(delivery.failure)
        else:
            summary.state = "sent"

    def _screen(
        self, rows: list[ClaimedRow], now: datetime
    ) -> tuple[list[RowResult], dict[int, Communication]]:
        """Fail rows that are too old or invalid (never sent); return them, and the rest
        as the communications to send, by row id."""
        failed: list[RowResult] = []
        outgoing: dict[int, Communication] = {}
        oldest = now - self.settings.max_age
        for row in rows:
            communication = _communication(row)
            if row.created_at < oldest:
                communication = f"expired: not accepted within {self.settings.max_age}"
            if isinstance(communication, Communication):
                outgoing[row.id] = communication
            else:
                failed.append(_final(row, Status.FAILED, communication, sent=False))
        return failed, outgoing

    def _deliver(
        self,
        rows: list[ClaimedRow],
        outgoing: dict[int, Communication],
        summary: BatchSummary,
        last_start: datetime,
    ) -> Delivery:
        """Send the batch; on a 400 or a too-large answer, split it and send the halves."""
        delivery = Delivery()
        queue: deque[list[ClaimedRow]] = deque([rows])
        while queue:
            batch = queue.popleft()
            if summary.requests and self.clock() > last_start:
                delivery.unresolved = batch + [row for rest in queue for row in rest]
                break
            result = self._send([outgoing[row.id] for row in batch], summary)
            if isinstance(result, Delivered):
                for row in batch:
                    delivery.outcomes[row.id] = result.outcomes.get(
                        row.client_message_id, _missing()
                    )
            elif isinstance(result, BatchTooLarge | BadRequest) and len(batch) > 1:
                if isinstance(result, BatchTooLarge):
                    delivery.too_large = min(delivery.too_large or len(batch), len(batch))
                middle = len(batch) // 2
                queue.extendleft([batch[middle:], batch[:middle]])
            elif isinstance(result, BatchTooLarge | BadRequest):
                delivery.outcomes[batch[0].id] = Rejected(reason=result.reason)
            else:
                delivery.failure = result
                delivery.unresolved = batch + [row for rest in queue for row in rest]
                break
        return delivery

    def _send(self, communications: list[Communication], summary: BatchSummary) -> SendResult:
        started = time.monotonic()
        result = self.sender.send(communications)
        summary.requests += 1
        summary.request_seconds.append(time.monotonic() - started)
        return result

    def _result(self, row: ClaimedRow, outcome: MessageOutcome, now: datetime) -> RowResult:
        """The row's next state after a clear or unclear per-message answer."""
        if isinstance(outcome, Accepted):
            return RowResult(
                id=row.id,
                claimed_attempts=row.attempts,
                status=Status.ACCEPTED,
                attempts=row.attempts,
                tracking_id=outcome.tracking_id,
            )
        if isinstance(outcome, Rejected):
            return _final(row, Status.FAILED, f"rejected: {outcome.reason}", sent=True)
        # Transient or Unknown: costs an attempt, resent later under the same id.
        if row.attempts >= self.settings.max_attempts:
            reason = f"gave up after {row.attempts} attempts: {outcome.reason}"
            return _final(row, Status.FAILED, reason, sent=True)
        delay = self._cooldown(row.attempts)
        return RowResult(
            id=row.id,
            claimed_attempts=row.attempts,
            status=Status.PENDING,
            attempts=row.attempts,
            next_attempt_at=now + delay,
            last_error=outcome.reason,
        )

    # -- after the batch: what every worker should know -------------------------------

    def _pause_until(
        self, failure: RequestFailure | None, gate: Gate, now: datetime
    ) -> datetime | None:
        """When sending may resume after a request-level failure (None: no failure)."""
        if failure is None:
            return None
        if isinstance(failure, RateLimited):
            floor = failure.retry_after or self.settings.backoff_base
            return now + max(floor, after_rate_limit(gate.spacing))
        if isinstance(failure, Unauthorized):
            return now + self.settings.backoff_max
        return now + self._cooldown(gate.failures + 1)

    def _update_gate(
        self,
        connection: Connection,
        delivery: Delivery,
        gate: Gate,
        pause_until: datetime | None,
        summary: BatchSummary,
        now: datetime,
    ) -> None:
        if delivery.too_large is not None:
            gates.limit_batch_size(connection, size=max(1, delivery.too_large // 2), now=now)
        failure = delivery.failure
        if failure is not None and pause_until is not None:
            rate_limited = isinstance(failure, RateLimited)
            gates.note_failure(
                connection,
                now=now,
                paused_until=pause_until,
                reason=_describe(failure),
                refused_key=self.key if isinstance(failure, Unauthorized) else None,
                spacing=after_rate_limit(gate.spacing) if rate_limited else None,
                counts=not rate_limited,
            )
        elif summary.requests and _gate_is_disturbed(gate):
            gates.note_success(connection, now=now, spacing=after_success(gate.spacing))


def _gate_is_disturbed(gate: Gate) -> bool:
    return bool(gate.failures or gate.refused_key or gate.spacing or gate.reason)


def _communication(row: ClaimedRow) -> Communication | str:
    """The row as the API takes it, or why it cannot be sent (raw-SQL rows skip the producer).

    Content goes out in its canonical form, not as stored: API field names only, $type
    first, every required field present, times in UTC with Z.
    """
    try:
        recipient = normalize_recipient(row.recipient)
        content = parse_content(row.content).to_api()
    except InvalidMessage as problem:
        return f"invalid: {problem}"
    return Communication(row.client_message_id, recipient, content)


def _missing() -> MessageOutcome:
    return Unknown(reason="no result for this message in the API's answer")


def _final(row: ClaimedRow, status: Status, reason: str, *, sent: bool) -> RowResult:
    """A final state; a row never sent gives back the attempt its claim counted."""
    attempts = row.attempts if sent else row.attempts - 1
    return RowResult(
        id=row.id,
        claimed_attempts=row.attempts,
        status=status,
        attempts=attempts,
        last_error=reason,
    )


def _released(row: ClaimedRow, resume_at: datetime, failure: RequestFailure | None) -> RowResult:
    """Back to pending after a request-level failure; the attempt is given back."""
    return RowResult(
        id=row.id,
        claimed_attempts=row.attempts,
        status=Status.PENDING,
        attempts=row.attempts - 1,
        next_attempt_at=resume_at,
        last_error=_describe(failure) if failure else None,
    )


def _describe(failure: RequestFailure) -> str:
    return f"{type(failure).__name__}: {failure.reason}"


def _count(results: list[RowResult], written: set[int], summary: BatchSummary) -> None:
    """Tally what was written (a stale worker's results are not)."""
    for result in results:
        if result.id not in written:
            continue
        if result.status is Status.ACCEPTED:
            summary.accepted += 1
        elif result.status is Status.FAILED:
            summary.failed += 1
        elif result.attempts < result.claimed_attempts:
            summary.released += 1
        else:
            summary.retried += 1


def _log_summary(summary: BatchSummary) -> None:
    if summary.state == "idle":
        return
    level = logging.WARNING if summary.alarm else logging.INFO
    log.log(
        level,
        "batch %s: claimed=%d accepted=%d retried=%d failed=%d released=%d requests=%d %.3fs%s",
        summary.state,
        summary.claimed,
        summary.accepted,
        summary.retried,
        summary.failed,
        summary.released,
        summary.requests,
        summary.seconds,
        f" ({summary.alarm})" if summary.alarm else "",
    )
