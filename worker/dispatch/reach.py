"""Evidence that a message may have reached Wiraya: what a request left unknown, kept for good.

A request that got no readable answer may still have been processed (a timeout after it
began, a dropped connection, a 5xx or an unreadable body after the work was done), and so may
a message the API's answer left out or accepted without a valid tracking id. The record keeps
the first such reason in ``reach_evidence`` and no later attempt, answer or operator clears it:
`outbox cancel` reads it to leave those messages alone. A request the API refused as a whole
(429, 401/403, 400, too large) and a clear per-message answer are no evidence.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.dispatch.record import RowResult, is_tracking_id
from worker.dispatch.screen import Outgoing
from worker.wiraya.results import (
    Accepted,
    Answered,
    MessageOutcome,
    SendResult,
    ServerError,
    TransportError,
    Unknown,
)

# A message the API's answer left out: its outcome is unknown, like a request's.
MISSING = "Unknown: no result for this message in the API's answer"


def of_request(result: SendResult) -> str | None:
    """Why a request's messages may have reached Wiraya, from the request's own result."""
    if isinstance(result, TransportError | ServerError):
        return f"{type(result).__name__}: {result.reason}"
    return None


def of_answer(outcome: MessageOutcome) -> str | None:
    """Why one message may have reached Wiraya, from its entry in an answer."""
    if isinstance(outcome, Unknown):
        return f"Unknown: {outcome.reason}"
    if isinstance(outcome, Accepted) and not is_tracking_id(outcome.tracking_id):
        return "accepted without a valid tracking id"
    return None


def with_evidence(results: Sequence[RowResult], evidence: dict[int, str]) -> list[RowResult]:
    """``results`` carrying the evidence gathered for their rows (none for the others)."""
    if not evidence:  # every message answered clearly: the usual batch
        return list(results)
    return [
        result._replace(reach_evidence=evidence[result.id]) if result.id in evidence else result
        for result in results
    ]


def note(reached: dict[int, str], batch: list[Outgoing], result: SendResult) -> None:
    """Keep why each message of a request may have reached Wiraya, if it may have."""
    if isinstance(result, Answered):
        answers = result.outcomes
        for outgoing in batch:
            outcome = answers.get(outgoing.communication.client_message_id)
            evidence = MISSING if outcome is None else of_answer(outcome)
            if evidence is not None:
                reached.setdefault(outgoing.id, evidence)
    elif (evidence := of_request(result)) is not None:  # the same for every message of it
        for outgoing in batch:
            reached.setdefault(outgoing.id, evidence)
