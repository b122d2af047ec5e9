"""The sandbox's EnqueueCommunications endpoint: faults, key check, validation, ledger and results.

It knows nothing of sockets: the HTTP server hands it a `Request` and writes back the `Reply`, or
drops the connection when the reply says so.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from sandbox.callbacks import CallbackPusher
from sandbox.faults import Dice, Faults, RateLimiter, Validation, retry_after_seconds
from sandbox.ledger import Entry, Ledger, new_tracking_ids
from sandbox.recipients import REASONS, Behaviour, behaviour, may_be_test_recipient
from sandbox.stats import Stats
from sandbox.validation import (
    InvalidRequest,
    client_message_id_of,
    communications_of,
    message_error,
)

API_PATH = "/api/EnqueueCommunications"
JSON_TYPE = "application/json; charset=utf-8"
ACCEPTED_MEDIA_TYPES = frozenset({"application/json", "text/json"})


@dataclass(frozen=True)
class Request:
    """What the endpoint needs of an HTTP request; `api_key` is the exact `X-ApiKey` header."""

    api_key: str | None
    content_type: str | None
    body: bytes


@dataclass(frozen=True)
class Reply:
    """An HTTP answer; `drop` closes the connection without writing it."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()
    drop: bool = False


def json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    """A JSON reply, compact as servers send it."""
    return Reply(status, orjson.dumps(payload), JSON_TYPE, headers)


def text_reply(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Reply:
    """A plain-text (or HTML) reply, as proxies and frameworks send for errors."""
    return Reply(status, text.encode(), content_type)


INTERNAL_ERROR = json_reply(500, {"message": "An error has occurred."})
UNAVAILABLE = text_reply(503, "The service is unavailable.")
BAD_GATEWAY = text_reply(
    502,
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n",
    "text/html",
)
TOO_LARGE = text_reply(
    413,
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    "<center><h1>413 Request Entity Too Large</h1></center>\r\n</body>\r\n</html>\r\n",
    "text/html",
)
FORBIDDEN = json_reply(403, {"message": "Forbidden: the caller's IP address is not whitelisted"})
INVALID_KEY = text_reply(401, "Invalid API Key")
UNSUPPORTED_MEDIA = json_reply(
    415, {"message": "the sandbox accepts application/json or text/json"}
)
BULK_LIMIT = json_reply(400, {"bulkItemLimitExceeded": True})


def bad_request(reason: str) -> Reply:
    """400 "Invalid input format" with the reason, as the API documents it."""
    return json_reply(400, {"message": f"Invalid input format: {reason}"})


class EnqueueService:
    """The endpoint's behaviour and state: faults, ledger, stats and dice, shared by all threads."""

    def __init__(
        self,
        faults: Faults | None = None,
        *,
        seed: int | None = 0,
        api_key: str | None = None,
        callbacks: CallbackPusher | None = None,
    ) -> None:
        self._faults = faults or Faults()
        self.callbacks = callbacks  # delivery reports of accepted messages, when configured
        self._api_key = api_key
        self.ledger = Ledger()
        self.stats = Stats()
        self.dice = Dice(seed)
        self._limiter = RateLimiter()
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

    def reset(self) -> None:
        """Empty the ledger and stats and restart the dice and rate limiter; faults stay."""
        self.ledger.reset()
        self.stats.reset()
        self.dice.reseed()
        self._limiter.reset()

    def stop(self) -> None:
        """Wake requests waiting out a latency or slow-answer fault, so the server stops quickly."""
        self._stopping.set()
        if self.callbacks is not None:
            self.callbacks.stop()

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

    def _rate_limit(self, _: Request, faults: Faults) -> Reply | None:
        wait = self._limiter.admit(faults.rate_limit)
        if wait is None:
            return None
        self.stats.add(rate_limited=1)
        seconds = retry_after_seconds(wait, faults.retry_after)
        return json_reply(429, {"message": "Too many requests"}, (("Retry-After", str(seconds)),))

    def _latency(self, _: Request, faults: Faults) -> Reply | None:
        self._pause(faults.latency)
        return None

    def _server_error(self, _: Request, faults: Faults) -> Reply | None:
        total = faults.p500 + faults.p503 + faults.p502_html
        if total <= 0.0:
            return None
        roll = self.dice.roll()
        if roll < faults.p500:
            return INTERNAL_ERROR
        if roll < faults.p500 + faults.p503:
            return UNAVAILABLE
        return BAD_GATEWAY if roll < total else None

    def _body_size(self, request: Request, faults: Faults) -> Reply | None:
        too_large = faults.max_body_bytes is not None and len(request.body) > faults.max_body_bytes
        return TOO_LARGE if too_large else None

    def _authenticate(self, request: Request, _: Faults) -> Reply | None:
        key = request.api_key
        if not key:
            return INVALID_KEY
        if self._api_key is not None and not hmac.compare_digest(
            key.encode(), self._api_key.encode()
        ):
            return INVALID_KEY
        return None

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
            valid, results = self._validate(communications, faults.validation)
        except InvalidRequest as exc:
            return bad_request(str(exc))
        results.update(self._record(valid))
        return self._after_work(json_reply(200, {"results": results}), faults)

    def _validate(
        self, communications: list[Any], mode: Validation
    ) -> tuple[list[tuple[str, str]], dict[str, Any]]:
        """The valid (clientMessageId, recipient) pairs, and failed results for the invalid ones."""
        valid: list[tuple[str, str]] = []
        failed: dict[str, Any] = {}
        for index, item in enumerate(communications):
            client_message_id = item.get("clientMessageId") if type(item) is dict else None
            if type(client_message_id) is not str or not client_message_id:
                client_message_id = client_message_id_of(item, index)  # raises, with the reason
            error = message_error(item)
            if error is None:
                valid.append((client_message_id, item["recipient"]))
            elif mode is Validation.REQUEST:
                raise InvalidRequest(
                    f"communications[{index}] (clientMessageId {client_message_id!r}): {error}"
                )
            else:
                failed[client_message_id] = _failure(error, transient=False)
        self.stats.add(messages=len(communications), invalid=len(failed))
        return valid, failed

    def _record(self, valid: list[tuple[str, str]]) -> dict[str, Any]:
        """Receive the valid messages in the ledger and decide each one's result."""
        now = datetime.now(UTC)
        fresh = new_tracking_ids(len(valid))
        results: dict[str, Any] = {}
        counts = dict.fromkeys(["duplicates", *(kind.value for kind in Behaviour)], 0)

        def answer(entry: Entry) -> None:
            tracking_id = entry.tracking_id
            if tracking_id is not None:
                counts["duplicates"] += 1
            else:
                if may_be_test_recipient(entry.recipient):  # the common case skips this
                    kind = behaviour(entry.recipient, entry.times_received)
                    if kind is not Behaviour.ACCEPT:
                        counts[kind.value] += 1
                        _test_recipient(entry, kind, results, fresh, now)
                        return
                tracking_id = entry.tracking_id = next(fresh)
                entry.accepted_at = now
            results[entry.client_message_id] = {
                "trackingId": tracking_id,
                "success": True,
                "isTransientError": False,
            }

        accepted: list[tuple[str, str, str]] = []

        def answer_and_note(entry: Entry) -> None:
            known = entry.tracking_id is not None
            answer(entry)
            if not known and entry.tracking_id is not None:
                accepted.append((entry.client_message_id, entry.recipient, entry.tracking_id))

        self.ledger.receive(valid, now, answer_and_note)
        counts[Behaviour.ACCEPT.value] = len(valid) - sum(counts.values())
        self.stats.add(**counts)
        if self.callbacks is not None and accepted:
            self.callbacks.accepted(accepted, now)  # before the answer: some reports go first
        return results

    def _after_work(self, reply: Reply, faults: Faults) -> Reply:
        """Faults that strike once the messages are accepted: the client cannot know they were."""
        if self.dice.chance(faults.p_drop):
            self.stats.add(dropped=1)
            return replace(reply, drop=True)
        if faults.slow_after_work > timedelta(0) and self.dice.chance(faults.p_slow):
            self.stats.add(slow=1)
            self._pause(faults.slow_after_work)
        if self.dice.chance(faults.p_bad_json):
            self.stats.add(bad_json=1)
            return replace(reply, body=reply.body[: len(reply.body) // 2])
        return reply

    def _pause(self, duration: timedelta) -> None:
        if duration > timedelta(0):
            self._stopping.wait(duration.total_seconds())


def _test_recipient(
    entry: Entry, kind: Behaviour, results: dict[str, Any], fresh: Iterator[str], now: datetime
) -> None:
    """Answer a test recipient's message (see sandbox.recipients) other than by accepting it."""
    if kind is Behaviour.OMIT:  # accepted, yet left out of the results
        entry.tracking_id, entry.accepted_at = next(fresh), now
    else:
        transient = kind is Behaviour.TRANSIENT
        results[entry.client_message_id] = _failure(REASONS[kind], transient=transient)


def _failure(reason: str, *, transient: bool) -> dict[str, Any]:
    return {
        "trackingId": None,
        "success": False,
        "isTransientError": transient,
        "errorMessage": reason,
    }
