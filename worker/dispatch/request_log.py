"""The requests one batch made, and what they prove of a too-large answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from worker.dispatch.screen import Outgoing
from worker.wiraya.results import Answered


@dataclass(frozen=True)
class RequestRecord:
    """One request made: when it started, how many messages, how long, what came back."""

    started: datetime
    size: int
    seconds: float
    result: str


def both_taken(
    requests: list[RequestRecord],
    first: tuple[int, list[Outgoing]],
    second: tuple[int, list[Outgoing]],
) -> bool:
    """Whether both halves of a too-large batch went whole and were answered: its size's fault.
    Each half is given as (the index of its first request, its messages)."""
    return second[0] > first[0] and all(answered_whole(requests, *h) for h in (first, second))


def answered_whole(requests: list[RequestRecord], index: int, half: list[Outgoing]) -> bool:
    """Whether request ``index`` sent ``half`` whole and was answered."""
    request = requests[index] if index < len(requests) else None
    return request is not None and (request.size, request.result) == (len(half), Answered.__name__)
