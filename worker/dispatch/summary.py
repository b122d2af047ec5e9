"""What one dispatch did: the Celery task's result (Flower shows it) and the worker's log line."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from models import Priority, Status
from worker.dispatch.claim import ClaimedRow, tenant_of
from worker.dispatch.record import RowResult
from worker.dispatch.sending import BatchSend

if TYPE_CHECKING:
    from worker.dispatch.policy.rules import Verdict

log = logging.getLogger("worker.dispatch")
_brake_logged: list[str | None] = [None]  # the brake this process last warned of


class BatchState(StrEnum):
    """How a dispatch ended."""

    IDLE = "idle"
    """Nothing was due (or another worker took it first)."""
    PAUSED = "paused"
    """The gate held it back: a pause, an open circuit, a refused key, the request rate."""
    SENT = "sent"
    """Its batches went out and every answer was recorded."""
    ALARM = "alarm"
    """A request failed as a whole (outage, 5xx, 429, refused key): a failed task in Flower."""


@dataclass
class BatchSummary:
    """What one dispatch did: counts of messages, requests and time."""

    state: BatchState = BatchState.IDLE
    batches: int = 0
    claimed: int = 0
    accepted: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    requests: int = 0
    seconds: float = 0.0
    alarm: str | None = None
    by_priority: Counter[str] = field(default_factory=Counter)  # claimed, by lane
    by_tenant: Counter[str] = field(default_factory=Counter)  # claimed, by tenant ("": default)
    request_seconds: list[float] = field(default_factory=list)
    full: bool = False  # the last claim filled a batch: more may be due
    # The sending policy's: held, paced, suppressed and duplicate messages, and SMS segments
    # sent by "lane/encoding"; the held rows' results, recorded with the batch.
    policy: Counter[str] = field(default_factory=Counter)
    segments: Counter[str] = field(default_factory=Counter)
    policy_held: list[RowResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (request timings and the fullness flag left out)."""
        return {
            "state": self.state.value,
            "batches": self.batches,
            "claimed": self.claimed,
            "accepted": self.accepted,
            "retried": self.retried,
            "failed": self.failed,
            "released": self.released,
            "requests": self.requests,
            "seconds": self.seconds,
            "alarm": self.alarm,
            "by_priority": dict(self.by_priority),
            "by_tenant": dict(self.by_tenant),
            **({"policy": dict(self.policy)} if self.policy else {}),
            **({"segments": dict(self.segments)} if self.segments else {}),
        }

    def add(self, batch: BatchSummary) -> None:
        """Fold the next batch of the same dispatch into this summary.

        The state stays "sent" unless the next batch raised an alarm: a batch that found
        nothing due, or sending paused by another worker, ends the dispatch quietly.
        """
        for name in ("batches", "claimed", "accepted", "retried", "failed", "released", "requests"):
            setattr(self, name, getattr(self, name) + getattr(batch, name))
        self.by_priority.update(batch.by_priority)
        self.by_tenant.update(batch.by_tenant)
        self.policy.update(batch.policy)
        self.segments.update(batch.segments)
        self.request_seconds += batch.request_seconds
        self.full = batch.full
        if batch.state is BatchState.ALARM:
            self.state, self.alarm = batch.state, batch.alarm

    def note_claimed(self, rows: list[ClaimedRow]) -> None:
        """Count claimed rows, by lane and by tenant (a batch holds one tenant's rows)."""
        self.claimed += len(rows)
        lanes = Counter(row.priority for row in rows)  # named once per lane, not once per row
        self.by_priority.update({Priority(lane).name.lower(): n for lane, n in lanes.items()})
        if rows:
            self.by_tenant[tenant_of(rows) or ""] += len(rows)

    def note_policy(self, verdict: Verdict) -> None:
        """What the sending policy held, refused and let go (segments by lane and encoding)."""
        self.policy.update(verdict.counts)
        self.segments.update(
            {f"{lane}/{encoding}": n for (lane, encoding), n in verdict.segments.items()}
        )
        self.policy_held = verdict.held

    def note_send(self, sent: BatchSend) -> None:
        """The requests a batch made, and how it ended: sent, or stopped by an alarm."""
        self.requests += len(sent.requests)
        self.request_seconds += [request.seconds for request in sent.requests]
        failure = sent.failure
        if failure is None:
            self.state = BatchState.SENT
        else:
            self.state, self.alarm = BatchState.ALARM, f"{type(failure).__name__}: {failure.reason}"

    def count(self, written: list[RowResult]) -> None:
        """Tally the row results the record wrote."""
        held = {result.id for result in self.policy_held}  # counted by the policy's counters
        for result in written:
            if result.id in held:
                continue
            if result.status is Status.ACCEPTED:
                self.accepted += 1
            elif result.status is Status.FAILED:
                self.failed += 1
            elif result.next_attempt_at is None:  # released: keeps its place, no attempt spent
                self.released += 1
            else:
                self.retried += 1

    def log(self) -> None:
        """One line per batch that did something: a warning when the brake it met changed
        (an outage began, a key was refused, sending resumed), INFO otherwise, so that a long
        outage logs a line when it starts and one when it ends, not one per probe."""
        if self.state is BatchState.IDLE:
            return
        level = logging.WARNING if _brake_changed(self) else logging.INFO
        log.log(
            level,
            "batch %s: claimed=%d accepted=%d retried=%d failed=%d released=%d requests=%d %.3fs%s",
            self.state.value,
            self.claimed,
            self.accepted,
            self.retried,
            self.failed,
            self.released,
            self.requests,
            self.seconds,
            f" ({self.alarm})" if self.alarm else "",
        )


def _brake(summary: BatchSummary) -> str | None:
    """The kind of brake a dispatch met (the failure's name: ServerError, Unauthorized, ...)."""
    if summary.state is BatchState.SENT and summary.alarm is None:
        return None
    return (summary.alarm or "").split(":", 1)[0] or None


def _brake_changed(summary: BatchSummary) -> bool:
    """Whether this dispatch met another brake than the last one this process warned of."""
    if summary.state not in {BatchState.SENT, BatchState.ALARM, BatchState.PAUSED}:
        return False
    brake = _brake(summary)
    if brake == _brake_logged[0]:
        return False
    _brake_logged[0] = brake
    return True
