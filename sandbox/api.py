"""The sandbox's EnqueueCommunications endpoint: faults, key check, validation, ledger and results.

It knows nothing of sockets: the HTTP server hands it a `Request` and writes back the `Reply`, or
drops the connection when the reply says so.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import orjson

from sandbox.faults import AccountLimiters, Dice, Faults, retry_after_seconds
from sandbox.ledger import Ledger, key_fingerprint
from sandbox.recipients import draws_no_answer, draws_server_error
from sandbox.replies import (
    BAD_GATEWAY,
    BULK_LIMIT,
    FORBIDDEN,
    INTERNAL_ERROR,
    INVALID_KEY,
    PROXY_BAD_REQUEST,
    TOO_LARGE,
    TOO_MANY_REQUESTS,
    UNAVAILABLE,
    UNSUPPORTED_MEDIA,
    Reply,
    bad_request,
    json_reply,
    results_reply,
)
from sandbox.reports import ReportPusher
from sandbox.stats import Stats
from sandbox.validation import InvalidRequest, communications_of
from sandbox.work import record, validate

API_PATH = "/api/EnqueueCommunications"
ACCEPTED_MEDIA_TYPES = frozenset({"application/json", "text/json"})
Ids = tuple[str, ...]  # clientMessageIds
# How long a request holding a hanging recipient is held before its connection is closed.
HANG = timedelta(minutes=5)


@dataclass(frozen=True)
class Request:
    """What the endpoint needs of an HTTP request; `api_key` is the exact `X-ApiKey` header."""

    api_key: str | None
    content_type: str | None
    body: bytes
    # Whether the client still waits for this request's answer (has not closed its connection).
    client_waiting: Callable[[], bool] = field(default=lambda: True)


class EnqueueService:
    """The endpoint's behaviour and state: faults, ledger, stats and dice, shared by all threads."""

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        seed: int | None = 0,
        api_key: str | Iterable[str] | None = None,
        reports: ReportPusher | None = None,
    ) -> None:
        self._faults = faults or Faults()
        self.reports = reports  # delivery reports of accepted messages, when configured
        self._api_keys = _keys(api_key)
        self.ledger = Ledger()
        self.stats = Stats()
        self.dice = Dice(seed)
        self._limiter = AccountLimiters()  # a bucket per key: Wiraya limits each account
        self._stopping = threading.Event()
        self._checks: Sequence[Callable[[Request, Faults], Reply | None]] = (
            self._outage,
            self._forbidden,
            self._rate_limit,
            self._latency,
            self._server_error,
            self._body_size,
            self._authenticate,
            self._media_type,
        )

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._faults

    def set_faults(self, faults: Faults) -> None:
        """Switch faults at run time; requests in progress keep the ones they started with."""
        self._faults = faults

    @property
    def api_key_required(self) -> bool:
        """Whether only the given X-ApiKeys are accepted (else any non-empty one)."""
        return self._api_keys is not None

    def set_api_key(self, api_key: str | Iterable[str] | None) -> None:
        """Accept only this X-ApiKey (or these) from now on (None: any): a rotated key."""
        self._api_keys = _keys(api_key)

    def reset(self) -> None:
        """Empty the ledger and stats and restart the dice and rate limiter; faults stay."""
        self.ledger.reset()
        self.stats.reset()
        self.dice.reseed()
        self._limiter.reset()

    def stop(self) -> None:
        """Wake requests waiting out a latency or slow-answer fault, so the server stops quickly."""
        self._stopping.set()
        if self.reports is not None:
            self.reports.stop()

    def handle(self, request: Request) -> Reply:
        """Answer one POST to the endpoint."""
        self.stats.request()
        faults = self._faults
        reply = self._refusal(request, faults) or self._enqueue(request, faults)
        if not reply.drop:
            self.stats.answered(reply.status)
        return reply

    def _refusal(self, request: Request, faults: Faults) -> Reply | None:
        """The first check that refuses the request, in the order a real deployment meets them."""
        for check in self._checks:
            reply = check(request, faults)
            if reply is not None:
                return reply
        return None

    def _outage(self, _: Request, faults: Faults) -> Reply | None:
        if not faults.outage:
            return None
        self.stats.add(during_outage=1)
        return UNAVAILABLE

    def _forbidden(self, _: Request, faults: Faults) -> Reply | None:
        return FORBIDDEN if faults.forbidden else None

    def _rate_limit(self, request: Request, faults: Faults) -> Reply | None:
        wait = self._limiter.admit(request.api_key, faults.rate_limit)
        if wait is None:
            return None
        self.stats.add(rate_limited=1)
        seconds = retry_after_seconds(wait, faults.retry_after)
        return json_reply(429, TOO_MANY_REQUESTS, (("Retry-After", str(seconds)),))

    def _latency(self, _: Request, faults: Faults) -> Reply | None:
        self._pause(faults.latency)
        return None

    def _server_error(self, _: Request, faults: Faults) -> Reply | None:
        """One roll of the dice picks a JSON 500, a text 503, an HTML 502 or an HTML 400."""
        chances = (
            (faults.p500, INTERNAL_ERROR),
            (faults.p503, UNAVAILABLE),
            (faults.p502_html, BAD_GATEWAY),
            (faults.p400_html, PROXY_BAD_REQUEST),
        )
        if all(chance <= 0.0 for chance, _ in chances):
            return None
        roll = self.dice.roll()
        for chance, reply in chances:
            if roll < chance:
                return reply
            roll -= chance
        return None

    def _body_size(self, request: Request, faults: Faults) -> Reply | None:
        too_large = faults.max_body_bytes is not None and len(request.body) > faults.max_body_bytes
        return TOO_LARGE if too_large else None

    def _authenticate(self, request: Request, _: Faults) -> Reply | None:
        key = request.api_key
        if not key:
            return INVALID_KEY
        known = self._api_keys or (key,)
        found = any(hmac.compare_digest(key.encode(), one.encode()) for one in known)
        return None if found else INVALID_KEY

    def _media_type(self, request: Request, _: Faults) -> Reply | None:
        media_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        return None if media_type in ACCEPTED_MEDIA_TYPES else UNSUPPORTED_MEDIA

    def _enqueue(self, request: Request, faults: Faults) -> Reply:
        """Validate the body, record it in the ledger and answer with per-message results."""
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            return bad_request(f"the body is not valid JSON ({exc})")
        try:
            communications = communications_of(body)
            if faults.max_batch is not None and len(communications) > faults.max_batch:
                return BULK_LIMIT
            valid, results = validate(communications, faults.validation, self.stats)
        except InvalidRequest as exc:
            return bad_request(str(exc))
        if any(draws_server_error(recipient) for _, recipient in valid):
            self.stats.add(poisoned=1)  # the server fails on it before anything is recorded
            return INTERNAL_ERROR
        if any(draws_no_answer(recipient) for _, recipient in valid):
            self.stats.add(poisoned=1)
            self._pause(HANG)  # the client gives up long before, or the server stops
            return replace(UNAVAILABLE, drop=True)
        accepted: list[tuple[str, str, str]] = []
        key = key_fingerprint(request.api_key)
        results.update(record(valid, self.ledger, self.stats, accepted, key))
        if self.reports is not None and accepted:
            # Before the answer goes out: some reports reach the receiver first, as Wiraya's may.
            self.reports.accepted(accepted, datetime.now(UTC))
        reply = results_reply(results, camel_case_keys=faults.camel_case_keys)
        return self._after_work(reply, faults, request, tuple(cmid for cmid, _ in valid))

    def _after_work(self, reply: Reply, faults: Faults, request: Request, ids: Ids) -> Reply:
        """Faults that strike once the messages are accepted: the client cannot know they were.

        A slow or trickling answer's ids are held in the ledger as being answered until it is
        written (`answered`): a resend meanwhile, while its client still waits, is counted.
        """
        if self.dice.chance(faults.p_drop):
            self.stats.add(dropped=1)
            return replace(reply, drop=True)
        slow = faults.slow_after_work > timedelta(0) and self.dice.chance(faults.p_slow)
        bad_json = self.dice.chance(faults.p_bad_json)
        trickle = faults.trickle > timedelta(0) and self.dice.chance(faults.p_trickle)
        if slow or trickle:
            self.ledger.answering(ids, request.client_waiting)
            reply = replace(reply, answering=ids, client_waiting=request.client_waiting)
        if slow:
            self.stats.add(slow=1)
            self._pause(faults.slow_after_work)
        if bad_json:
            self.stats.add(bad_json=1)
            reply = replace(reply, body=reply.body[: len(reply.body) // 2])
        if trickle:
            self.stats.add(trickled=1)
            reply = replace(reply, trickle=faults.trickle)
        return reply

    def answered(self, reply: Reply) -> None:
        """The server wrote `reply`, or gave up writing it."""
        if reply.answering and reply.client_waiting is not None:
            self.ledger.answered(reply.answering, reply.client_waiting)

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds` (a trickling answer's pauses); True when the server is stopping."""
        return self._stopping.wait(seconds)

    def _pause(self, duration: timedelta) -> None:
        if duration > timedelta(0):
            self._stopping.wait(duration.total_seconds())


def _keys(api_key: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """The X-ApiKeys accepted: one, several (one per account), or None for any."""
    if api_key is None:
        return None
    return (api_key,) if isinstance(api_key, str) else tuple(api_key)
