"""What a request to EnqueueCommunications can come to: one typed result per batch.

`WirayaClient.send` never raises for HTTP or network trouble; it returns one of these, which the
dispatcher maps onto the README's outcome table:

    SendResult
    ├── Delivered(outcomes)          2xx with a results object; for every clientMessageId sent:
    │     ├── Accepted(tracking_id)    success
    │     ├── Rejected(reason)         success false, isTransientError false: permanent
    │     ├── Transient(reason)        success false, isTransientError true (or absent)
    │     └── Unknown(reason)          missing from results or unreadable: resend, same id
    └── RequestFailure(reason)       the request as a whole; no message spends an attempt
          ├── RateLimited(retry_after) 429, with Retry-After when given
          ├── Unauthorized(status)     401 / 403
          ├── BatchTooLarge            413, or 400 saying bulkItemLimitExceeded / too large
          ├── BadRequest               any other 400 (or 422); reason is the API's text
          ├── ServerError(status)      5xx, HTML pages, other statuses, bad or malformed 2xx bodies
          └── TransportError           timeouts, refused or dropped connections: outcome unknown

Plain data, no HTTP: the dispatcher imports this module without httpx.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any


@dataclass(frozen=True)
class Communication:
    """One message to send; `content` may come from jsonb, so its key order is not trusted."""

    client_message_id: str
    recipient: str
    content: Mapping[str, Any]


# Per-message outcomes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """Wiraya enqueued the message under this tracking id."""

    tracking_id: str


@dataclass(frozen=True)
class Rejected:
    """A permanent failure of this message: never resend it."""

    reason: str


@dataclass(frozen=True)
class Transient:
    """A failure of this message that a later attempt may not have."""

    reason: str


@dataclass(frozen=True)
class Unknown:
    """No readable answer for this message; resend it under the same clientMessageId."""

    reason: str


MessageOutcome = Accepted | Rejected | Transient | Unknown


@dataclass(frozen=True)
class Delivered:
    """A 2xx answer with results; one outcome per clientMessageId sent."""

    outcomes: dict[str, MessageOutcome]


# Request-level failures -------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestFailure:
    """The request as a whole failed; what became of its messages is not known from it."""

    reason: str


@dataclass(frozen=True)
class RateLimited(RequestFailure):
    """429: wait at least `retry_after` (None when the API did not say) and slow down."""

    retry_after: timedelta | None = None


@dataclass(frozen=True)
class Unauthorized(RequestFailure):
    """401 or 403: the key is wrong or the caller is not allowed; sending more will not help."""

    status: int = 401


@dataclass(frozen=True)
class BatchTooLarge(RequestFailure):
    """The batch is more than the API takes at once: split it.

    ``too_many_items``: the API's own bulkItemLimitExceeded (a limit on the count, which the
    gate learns); False for a 413 (too many bytes, which says nothing of the count).
    """

    too_many_items: bool = True


@dataclass(frozen=True)
class BadRequest(RequestFailure):
    """400 for the batch; `reason` is the API's own text, trimmed."""


@dataclass(frozen=True)
class ServerError(RequestFailure):
    """The server or a proxy failed, or answered something unreadable or unexpected."""

    status: int = 500


@dataclass(frozen=True)
class TransportError(RequestFailure):
    """No HTTP answer: a timeout, or a refused or dropped connection. The API may have the work."""


SendResult = (
    Delivered
    | RateLimited
    | Unauthorized
    | BatchTooLarge
    | BadRequest
    | ServerError
    | TransportError
)
