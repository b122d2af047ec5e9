"""What a request to EnqueueCommunications can come to: one typed result per batch.

`WirayaClient.send` never raises for HTTP or network trouble; it returns one of these, which the
dispatcher maps onto each message's outcome (docs/how-it-works.md#the-api-client):

    SendResult
    ├── Answered(outcomes)           2xx with a results object; for every clientMessageId sent:
    │     ├── Accepted(tracking_id)    success, with a tracking id of exactly 32 hex characters
    │     ├── Rejected(reason)         success false, isTransientError false: permanent
    │     ├── Transient(reason)        success false, isTransientError true (or absent)
    │     └── Unknown(reason)          missing from results, unreadable, a malformed tracking id,
    │                                  one tracking id given to two messages, a key given twice or
    │                                  shared by two messages: resend, same clientMessageId
    └── RequestFailure(reason)       the request as a whole; no message spends an attempt
          ├── RateLimited(retry_after) 429, with Retry-After when given
          ├── Unauthorized(status)     401 / 403
          ├── BatchTooLarge(limit)     the API's JSON 400 {"bulkItemLimitExceeded": true}
          │                            (limit ITEMS), or a 413 whatever its body (limit BYTES)
          ├── BadRequest               any other 400 (or 422) in the API's own JSON: validation
          ├── ServerError(status)      5xx; a 400/422 that is not JSON (a proxy's or firewall's
          │                            page, an empty body); other statuses; 2xx bodies that are
          │                            not JSON, malformed, nested too deeply or too large
          └── TransportError           timeouts, the request's deadline, refused or dropped
                                       connections: outcome unknown

Every reason is cleaned when the result is built (`models.text.clean`): one line,
no control characters, at most 500 characters, so it can be stored and logged as it is.
Plain data, no HTTP: the dispatcher imports this module without httpx.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from models.text import clean


class Communication(NamedTuple):
    """One message to send; `content` may come from jsonb, so its key order is not trusted.
    (A named tuple: one is built for every message sent.)"""

    client_message_id: str
    recipient: str
    content: Mapping[str, Any]


# Per-message outcomes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """Wiraya enqueued the message under this tracking id."""

    tracking_id: str


@dataclass(frozen=True)
class _Reasoned:
    """A result that carries a reason: cleaned on construction, whoever builds it."""

    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", clean(self.reason))


@dataclass(frozen=True)
class Rejected(_Reasoned):
    """A permanent failure of this message: never resend it."""


@dataclass(frozen=True)
class Transient(_Reasoned):
    """A failure of this message that a later attempt may not have."""


@dataclass(frozen=True)
class Unknown(_Reasoned):
    """No readable answer for this message; resend it under the same clientMessageId."""


MessageOutcome = Accepted | Rejected | Transient | Unknown


@dataclass(frozen=True)
class Answered:
    """A 2xx answer with results; one outcome per clientMessageId sent."""

    outcomes: dict[str, MessageOutcome]


# Request-level failures -------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestFailure(_Reasoned):
    """The request as a whole failed; what became of its messages is not known from it."""

    @property
    def unavailable(self) -> bool:
        """Whether it says the API is unavailable to everyone: no message of it draws it."""
        return False


@dataclass(frozen=True)
class RateLimited(RequestFailure):
    """429: wait at least `retry_after` (None when the API did not say) and slow down."""

    retry_after: timedelta | None = None


@dataclass(frozen=True)
class Unauthorized(RequestFailure):
    """401 or 403: the key is wrong or the caller is not allowed; sending more will not help."""

    status: int = 401


class BatchLimit(StrEnum):
    """Which of the API's limits a batch went over."""

    ITEMS = "items"  # the API's 400 {"bulkItemLimitExceeded": true}: too many messages at once
    BYTES = "bytes"  # 413: a body larger than the API, or a proxy in front of it, takes


@dataclass(frozen=True)
class BatchTooLarge(RequestFailure):
    """The batch is over a limit of the API: split it.

    Only `BatchLimit.ITEMS` says how many messages the API takes; a 413 (`BatchLimit.BYTES`)
    says the body was too big, which one oversized message can cause whatever the count.
    """

    limit: BatchLimit = field(kw_only=True)


@dataclass(frozen=True)
class BadRequest(RequestFailure):
    """400 for the batch; `reason` is the API's own text, trimmed."""


# The statuses of an outage, never of one message: a gateway's page, the API's "unavailable".
UNAVAILABLE_STATUSES = frozenset({502, 503})


@dataclass(frozen=True)
class ServerError(RequestFailure):
    """The server or a proxy failed, or answered something unreadable or unexpected."""

    status: int = 500

    @property
    def unavailable(self) -> bool:
        """A gateway's 502 or the API's own 503: an outage, whatever the request held."""
        return self.status in UNAVAILABLE_STATUSES


@dataclass(frozen=True)
class TransportError(RequestFailure):
    """No HTTP answer: a timeout, or a refused or dropped connection. The API may have the work."""

    unconnected: bool = False  # no connection was made: nothing of the request left this host

    @property
    def unavailable(self) -> bool:
        """No connection was made: no message of the request can have drawn it."""
        return self.unconnected


SendResult = (
    Answered
    | RateLimited
    | Unauthorized
    | BatchTooLarge
    | BadRequest
    | ServerError
    | TransportError
)
