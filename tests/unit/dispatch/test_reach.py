"""Which answers are evidence that a message may have reached Wiraya, and which are not."""

from __future__ import annotations

from datetime import timedelta

import pytest

from models import Status
from worker.dispatch import reach
from worker.dispatch.record import RowResult
from worker.wiraya.results import (
    Accepted,
    Answered,
    BadRequest,
    BatchLimit,
    BatchTooLarge,
    RateLimited,
    Rejected,
    SendResult,
    ServerError,
    Transient,
    TransportError,
    Unauthorized,
    Unknown,
)


@pytest.mark.parametrize(
    ("result", "evidence"),
    [
        (TransportError("timed out"), "TransportError: timed out"),
        (ServerError("HTTP 502: HTML page", status=502), "ServerError: HTTP 502: HTML page"),
        (RateLimited("HTTP 429", retry_after=timedelta(seconds=3)), None),
        (Unauthorized("HTTP 403", status=403), None),
        (BadRequest("recipient"), None),
        (BatchTooLarge("too many", limit=BatchLimit.ITEMS), None),
        (Answered({}), None),  # the answer's entries speak for each message
    ],
)
def test_a_request_is_evidence_only_when_it_may_have_been_processed(
    result: SendResult, evidence: str | None
) -> None:
    assert reach.of_request(result) == evidence


def test_an_answers_entry_is_evidence_when_it_leaves_the_outcome_unknown() -> None:
    assert reach.of_answer(Unknown("unreadable")) == "Unknown: unreadable"
    assert reach.of_answer(Accepted("not-a-tracking-id")) == "accepted without a valid tracking id"
    for clear in (Accepted("a" * 32), Rejected("blocked"), Transient("busy")):
        assert reach.of_answer(clear) is None


def test_evidence_is_attached_to_its_rows_only() -> None:
    results = [RowResult(1, Status.PENDING, 0), RowResult(2, Status.ACCEPTED, 1)]
    attached = reach.with_evidence(results, {1: "TransportError: timed out"})
    assert [r.reach_evidence for r in attached] == ["TransportError: timed out", None]
