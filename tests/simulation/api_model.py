"""The API in-process: each request's answer scripted by the fault plan, and a ledger of sends.

``SimSender`` is a `worker.dispatch.sending.Sender`: a request hands the baton over, takes
simulated latency (a hang takes it to the request's deadline, then times out), and answers as
the plan says at the moment it arrived. The ledger counts, per clientMessageId, the requests
that held it (alone or not) and what the API answered; the API keeps one tracking id per
clientMessageId, whatever the number of sends (it de-duplicates, as Wiraya does). Each request
comes under an API key: a window may be one key's, and each account (key) may have a request
limit of its own, a token bucket in simulated time that answers 429 once it is empty.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from tests.simulation.faults import ApiFault, FaultPlan, Poison
from tests.simulation.scheduler import Scheduler
from worker.wiraya.results import (
    Accepted,
    Answered,
    BadRequest,
    BatchLimit,
    BatchTooLarge,
    Communication,
    RateLimited,
    SendResult,
    ServerError,
    TransportError,
    Unauthorized,
)

REFUSED_LATENCY = 0.01
ITEMS_ANSWER = "BatchTooLarge:items"  # how the request list names a too-many-items answer


@dataclass
class Entry:
    """What the API saw of one clientMessageId."""

    sends: int = 0
    lone_sends: int = 0  # requests holding this message alone
    # Lone sends answered while the API was well and recorded, since an operator's last
    # retry: what a message that fails on its own spends its attempts on.
    lone_since_retry: int = 0
    accepted_at: float | None = None  # when the API first took it (true time)
    answered: str | None = None  # the last clear answer it gave (accepted, rejected)


@dataclass(frozen=True)
class Request:
    worker: str
    start: float
    size: int
    result: str = ""
    key: str = ""  # the API key it came under


@dataclass
class ApiModel:
    """The Wiraya API of one run: the plan, the ledger, the requests and who has one in flight."""

    plan: FaultPlan
    scheduler: Scheduler
    seed: int
    numbers: dict[str, int] = field(default_factory=dict)  # clientMessageId -> message number
    ledger: dict[str, Entry] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    in_flight: dict[str, float] = field(default_factory=dict)  # worker -> its request's start
    holding: dict[str, set[str]] = field(default_factory=dict)  # worker -> ids in flight
    buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # key -> (tokens, at)

    def __post_init__(self) -> None:
        self.rng = random.Random(f"api-{self.seed}")

    def admits(self, key: str, elapsed: float) -> bool:
        """Whether the account of ``key`` takes a request now (its own limit, if it has one):
        a bucket of max(1, rate) requests, refilled at its rate."""
        rate = dict(self.plan.account_limits).get(key)
        if rate is None:
            return True
        capacity = max(1.0, rate)
        tokens, at = self.buckets.get(key, (capacity, elapsed))
        tokens = min(capacity, tokens + (elapsed - at) * rate)
        admitted = tokens >= 1.0
        self.buckets[key] = (tokens - 1.0 if admitted else tokens, elapsed)
        return admitted

    def tracking_id(self, client_message_id: str) -> str:
        return hashlib.md5(f"{self.seed}/{client_message_id}".encode()).hexdigest()

    def poison_of(self, client_message_id: str) -> Poison | None:
        number = self.numbers.get(client_message_id)
        return None if number is None else self.plan.poison_of(number)

    def answer(
        self, batch: Sequence[Communication], elapsed: float, key: str = ""
    ) -> tuple[SendResult, bool]:
        """What the API answers now, and whether it hangs until the deadline instead."""
        window = self.plan.window_at(elapsed, key)
        kinds = {self.poison_of(c.client_message_id) for c in batch}
        if window is not None:
            failure = _window_failure(window.kind, window.retry_after)
            if failure is not None:
                return failure, False
            return TransportError("timed out (the API hangs)"), True
        if not self.admits(key, elapsed):
            return RateLimited("HTTP 429: too many requests", retry_after=None), False
        limit = self.plan.item_limit_at(elapsed)
        if limit is not None and len(batch) > limit:
            return BatchTooLarge("bulkItemLimitExceeded", limit=BatchLimit.ITEMS), False
        if Poison.HANG in kinds:
            return TransportError("timed out (a message hangs the API)"), True
        if Poison.SERVER_ERROR in kinds:
            return ServerError("HTTP 500: internal error", status=500), False
        if Poison.TOO_LARGE in kinds:
            return BatchTooLarge("HTTP 413: body too large", limit=BatchLimit.BYTES), False
        if Poison.BAD_REQUEST in kinds:
            return BadRequest("HTTP 400: recipient: not a valid MSISDN"), False
        ids = [c.client_message_id for c in batch]
        return Answered({cmid: Accepted(self.tracking_id(cmid)) for cmid in ids}), False

    def note_sent(self, worker: str, batch: Sequence[Communication], elapsed: float) -> None:
        for communication in batch:
            entry = self.ledger.setdefault(communication.client_message_id, Entry())
            entry.sends += 1
            if len(batch) == 1:
                entry.lone_sends += 1
        self.in_flight[worker] = elapsed
        self.holding[worker] = {c.client_message_id for c in batch}


def _rejects_alone(result: SendResult) -> bool:
    """Whether this answer to a lone message fails it (a 400, a 413; not the item limit)."""
    if isinstance(result, BatchTooLarge):
        return result.limit is not BatchLimit.ITEMS
    return isinstance(result, BadRequest)


def _name(result: SendResult) -> str:
    if isinstance(result, BatchTooLarge) and result.limit is BatchLimit.ITEMS:
        return ITEMS_ANSWER
    return type(result).__name__


def _window_failure(kind: ApiFault, retry_after: float | None) -> SendResult | None:
    """The failure a window answers every request with (None: it hangs)."""
    if kind is ApiFault.OUTAGE:
        return ServerError("HTTP 503: service unavailable", status=503)
    if kind is ApiFault.SERVER_ERRORS:
        return ServerError("HTTP 500: internal error", status=500)
    if kind is ApiFault.HTML:
        return ServerError("HTTP 502: an HTML page (<html>Bad Gateway</html>)", status=502)
    if kind is ApiFault.REFUSED:
        return TransportError("connection refused", unconnected=True)
    if kind is ApiFault.UNAUTHORIZED:
        return Unauthorized("HTTP 401: invalid API key", status=401)
    if kind is ApiFault.FORBIDDEN:
        return Unauthorized("HTTP 403: an HTML page (<html>Forbidden</html>)", status=403)
    if kind is ApiFault.RATE_LIMITED:
        after = None if retry_after is None else timedelta(seconds=retry_after)
        return RateLimited("HTTP 429: too many requests", retry_after=after)
    return None


class SimSender:
    """One worker's API client: a Sender whose requests take simulated time."""

    def __init__(self, api: ApiModel, worker: str, checker: object, key: str = "") -> None:
        self.api, self.worker, self.checker, self.key = api, worker, checker, key

    def send(self, batch: Sequence[Communication], *, deadline: float | None = None) -> SendResult:
        scheduler = self.api.scheduler
        names = " ".join(str(c.client_message_id) for c in batch)
        scheduler.pause(f"request of {len(batch)}: {names}")
        clock = scheduler.clock
        start = clock.elapsed
        self.checker.on_request(self.worker, batch, start, self.key)  # type: ignore[attr-defined]
        self.api.note_sent(self.worker, batch, start)
        result, hangs = self.api.answer(batch, start, self.key)
        remaining = float("inf") if deadline is None else deadline - clock.monotonic()
        refused = isinstance(result, TransportError) and not hangs
        latency = REFUSED_LATENCY if refused else self.api.rng.uniform(0.05, 0.6)
        if hangs or latency > remaining:
            scheduler.sleep(max(0.0, min(remaining, 600.0)))
            if not hangs and isinstance(result, Answered):
                for cmid in result.outcomes:  # the API did the work; the answer came too late
                    entry = self.api.ledger[cmid]
                    entry.accepted_at = entry.accepted_at or clock.elapsed
            result = TransportError("timed out: the request's deadline passed")
        else:
            scheduler.sleep(latency)
        self.api.requests.append(Request(self.worker, start, len(batch), _name(result), self.key))
        clear = self._answered(batch, result)
        scheduler.note(f"answer {type(result).__name__} ({len(batch)})")
        lone = len(batch) == 1 and self.api.plan.calm_at(start)
        self.checker.on_answer(self.worker, clear, batch[0].client_message_id if lone else None)  # type: ignore[attr-defined]
        return result

    def _answered(self, batch: Sequence[Communication], result: SendResult) -> list[str]:
        api = self.api
        api.in_flight.pop(self.worker, None)
        api.holding.pop(self.worker, None)
        clear = []
        if isinstance(result, Answered):
            for cmid, outcome in result.outcomes.items():
                entry = api.ledger[cmid]
                if isinstance(outcome, Accepted) and entry.accepted_at is None:
                    entry.accepted_at = api.scheduler.clock.elapsed
                entry.answered = "accepted"
                clear.append(cmid)
        elif len(batch) == 1 and _rejects_alone(result):
            cmid = batch[0].client_message_id
            api.ledger[cmid].answered = "rejected"
            clear.append(cmid)
        return clear
