"""What each claimed row becomes after its batch, row by row."""

from __future__ import annotations

import random
from datetime import datetime

from models import Status
from worker.dispatch import reach
from worker.dispatch.claim import ClaimedRow
from worker.dispatch.record import RowResult, is_tracking_id
from worker.dispatch.retry import backoff
from worker.dispatch.screen import Outgoing
from worker.dispatch.sending import BatchSend
from worker.settings import Settings
from worker.wiraya.results import Accepted, MessageOutcome, Rejected


class Outcomes:
    """Turns answers into row results with the settings' attempts and backoff."""

    def __init__(self, settings: Settings, rng: random.Random) -> None:
        self.settings = settings
        self.rng = rng

    def of_answer(self, row: ClaimedRow, outcome: MessageOutcome, now: datetime) -> RowResult:
        """The row's next state after a clear or unclear per-message answer."""
        if isinstance(outcome, Accepted):
            if is_tracking_id(outcome.tracking_id):
                return RowResult(
                    row.id, Status.ACCEPTED, row.attempts, tracking_id=outcome.tracking_id
                )
            return self.retry(row, "accepted without a valid tracking id: resent", now, 0)
        if isinstance(outcome, Rejected):
            return RowResult(
                row.id, Status.FAILED, row.attempts, last_error=f"rejected: {outcome.reason}"
            )
        # Transient or Unknown: costs an attempt, resent later under the same id; answered,
        # the message is no suspect.
        return self.retry(row, outcome.reason, now, 0)

    def retry(
        self, row: ClaimedRow, reason: str, now: datetime, suspicion: int | None = None
    ) -> RowResult:
        """An attempt spent: resent after a backoff, or failed once the attempts are used up."""
        if row.attempts >= self.settings.max_attempts:
            reason = f"gave up after {row.attempts} attempts: {reason}"
            return RowResult(
                row.id, Status.FAILED, row.attempts, last_error=reason, suspicion=suspicion
            )
        delay = backoff(
            row.attempts,
            base=self.settings.backoff_base,
            cap=self.settings.backoff_max,
            rng=self.rng,
        )
        return RowResult(
            row.id,
            Status.PENDING,
            row.attempts,
            next_attempt_at=now + delay,
            last_error=reason,
            suspicion=suspicion,
        )


def unsent_failure(row: ClaimedRow, reason: str) -> RowResult:
    """Failed without being sent (invalid, expired): the claim's attempt is given back."""
    return RowResult(row.id, Status.FAILED, row.attempts - 1, last_error=reason)


def released(
    row: ClaimedRow,
    reason: str | None,
    suspicion: int | None = None,
    until: datetime | None = None,
) -> RowResult:
    """Back to pending, unsent or with its outcome not held against it: attempt given back.

    It keeps its due time, so it keeps its place in its lane; the gate holds it back. It keeps
    its suspicion, raised by the requests that failed with it (``suspicion``). A suspect that
    waits out an outage others drew is due again ``until`` (when its failure can be judged)."""
    return RowResult(
        row.id,
        Status.PENDING,
        row.attempts - 1,
        next_attempt_at=until,
        last_error=reason,
        suspicion=suspicion,
    )


def results_of(
    outgoing: list[Outgoing], sent: BatchSend, outcomes: Outcomes, *, now: datetime
) -> list[RowResult]:
    """Every sent row's next state from the answers its requests got; the unanswered released."""
    results = _settled(outgoing, sent, outcomes, now)
    failure = sent.failure
    reason = f"{type(failure).__name__}: {failure.reason}" if failure else None
    raised = _raised(outgoing, sent) if sent.unresolved else {}
    results += [
        released(row, reason, raised.get(row.id), sent.waiting.get(row.id))
        for row in sent.unresolved
    ]
    return reach.with_evidence(results, sent.reached)


def take_settled(
    outgoing: list[Outgoing], sent: BatchSend, outcomes: Outcomes, *, now: datetime
) -> list[RowResult]:
    """The next state of every row settled so far, taken out of ``sent`` to be recorded
    now: ``results_of`` leaves them out afterwards."""
    results = _settled(outgoing, sent, outcomes, now)
    for result in results:
        for settled in (sent.outcomes, sent.poisoned, sent.expired):
            settled.pop(result.id, None)
    return reach.with_evidence(results, sent.reached)


def _settled(
    outgoing: list[Outgoing], sent: BatchSend, outcomes: Outcomes, now: datetime
) -> list[RowResult]:
    """The rows with an answer, an isolation or an expiry, and what each becomes."""
    results = []
    answers, poisoned, expired = sent.outcomes, sent.poisoned, sent.expired
    raised = _raised(outgoing, sent) if poisoned else {}
    for item in outgoing:
        row = item.row
        if (answer := answers.get(row.id)) is not None:
            results.append(outcomes.of_answer(row, answer, now))
        elif row.id in poisoned:
            results.append(outcomes.retry(row, poisoned[row.id], now, raised[row.id]))
        elif row.id in expired:
            results.append(unsent_failure(row, expired[row.id]))
    return results


def _raised(outgoing: list[Outgoing], sent: BatchSend) -> dict[int, int]:
    """Each message's suspicion, raised by the requests that failed with it unanswered."""
    unanswered = sent.unanswered
    return {item.id: item.suspicion + unanswered.get(item.id, 0) for item in outgoing}
