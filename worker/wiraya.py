"""The client of Wiraya's EnqueueCommunications API: one batch per call, a typed outcome for each.

`WirayaClient.send` never raises for HTTP or network trouble; it returns one of these, which the
dispatcher maps onto design.md §5:

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

One `WirayaClient` holds one pooled HTTP connection pool: create it once per process (the
dispatcher calls `WirayaClient.from_settings` once per worker process) and share it between
threads. A client inherited through `fork` opens a fresh pool in the child on first use, so
parent and child never share a socket. The API key is sent only in the `X-ApiKey` header, never
over plain HTTP except to this machine or a named sandbox host, and never logged; logged
recipients are masked.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import os
import re
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import orjson

if TYPE_CHECKING:
    from worker.settings import Settings

log = logging.getLogger(__name__)

ENDPOINT_PATH = "/api/EnqueueCommunications"
API_KEY_HEADER = "X-ApiKey"  # exactly this spelling: Wiraya's server has been case-sensitive
DEFAULT_CONNECT_TIMEOUT = timedelta(seconds=10)
MAX_REASON_LENGTH = 500
_REASON_FIELDS = ("errorMessage", "error", "message", "reason", "title", "detail")
_TOO_LARGE_HINTS = ("bulkitemlimitexceeded", "too large", "too many communications", "batch size")


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
    """The batch has more messages than the API takes at once: split it."""


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


# The client -------------------------------------------------------------------------------------


class WirayaClient:
    """Sends batches to EnqueueCommunications over one keep-alive connection pool (thread-safe)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: timedelta,
        *,
        connect_timeout: timedelta | None = None,
        sandbox_hosts: Collection[str] = (),
    ) -> None:
        _refuse_plain_http(base_url, sandbox_hosts)
        if not api_key:
            raise ValueError("api_key: must not be empty")
        self._url = base_url.rstrip("/") + ENDPOINT_PATH
        self._headers = {
            API_KEY_HEADER: api_key,
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
        }
        connect = min(timeout, connect_timeout or DEFAULT_CONNECT_TIMEOUT)
        self._timeout = httpx.Timeout(timeout.total_seconds(), connect=connect.total_seconds())
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._http = self._new_pool()

    @classmethod
    def from_settings(cls, settings: Settings) -> WirayaClient:
        """A client for the configured API; create one per process and reuse it."""
        return cls(
            settings.wiraya_base_url,
            settings.api_key,
            settings.wiraya_timeout,
            sandbox_hosts=settings.sandbox_hosts,
        )

    def send(self, batch: Sequence[Communication]) -> SendResult:
        """Send one batch in one request; never raises for HTTP or network problems."""
        if not batch:
            return Delivered({})
        try:
            body = encode_request(batch)
        except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits in a content
            return BadRequest(f"a message cannot be encoded as JSON: {exc}")
        started = time.perf_counter()
        try:
            response = self._pool().post(self._url, content=body)
        except httpx.TimeoutException as exc:
            result: SendResult = TransportError(f"timed out: {_describe(exc)}")
        except httpx.RequestError as exc:
            result = TransportError(_describe(exc))
        else:
            result = interpret_response(
                response.status_code,
                response.headers,
                response.content,
                [message.client_message_id for message in batch],
            )
        _log_result(batch, result, time.perf_counter() - started)
        return result

    def close(self) -> None:
        """Close the pool's connections; the client must not be used afterwards."""
        with self._lock:
            if self._pid == os.getpid():
                self._http.close()

    def __enter__(self) -> WirayaClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _new_pool(self) -> httpx.Client:
        return httpx.Client(
            headers=self._headers,
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        )

    def _pool(self) -> httpx.Client:
        """This process's pool: after a fork the child opens its own instead of sharing sockets."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    _inherited.append(self._http)  # the parent's sockets: never touch, never close
                    self._http = self._new_pool()
                    self._pid = os.getpid()
        return self._http


_inherited: list[httpx.Client] = []


# Encoding ---------------------------------------------------------------------------------------


def serialize_content(content: Mapping[str, Any]) -> dict[str, Any]:
    """`content` with `$type` as its first key, as Wiraya's ASP.NET server requires.

    A dict already in that order is returned as it is (not copied); otherwise a reordered copy.
    """
    if type(content) is dict and next(iter(content), None) == "$type":
        return content
    if "$type" not in content:
        return dict(content)
    ordered: dict[str, Any] = {"$type": content["$type"]}
    ordered.update(content)  # `$type` is already in place: update keeps it first
    return ordered


def encode_request(batch: Sequence[Communication]) -> bytes:
    """The EnqueueCommunications request body for a batch, as compact JSON."""
    communications = [
        {
            "clientMessageId": message.client_message_id,
            "recipient": message.recipient,
            "content": serialize_content(message.content),
        }
        for message in batch
    ]
    return orjson.dumps({"communications": communications})


# Decoding ---------------------------------------------------------------------------------------


def interpret_response(
    status: int, headers: Mapping[str, str], body: bytes, sent_ids: Sequence[str]
) -> SendResult:
    """What an HTTP answer to a batch of `sent_ids` means (`headers` looked up case-blind)."""
    if 200 <= status < 300:
        return _delivered(status, body, sent_ids)
    if status in (401, 403):
        return Unauthorized(f"HTTP {status}: {_error_text(body)}", status)
    if status == 429:
        retry_after = parse_retry_after(_header(headers, "Retry-After"))
        return RateLimited(f"HTTP 429: {_error_text(body)}", retry_after)
    if status == 413:
        return BatchTooLarge(f"HTTP 413: {_error_text(body)}")
    if status in (400, 422):
        if _says_too_large(body):
            return BatchTooLarge(f"HTTP {status}: {_error_text(body)}")
        return BadRequest(_error_text(body))
    if status >= 500:
        return ServerError(f"HTTP {status}: {_error_text(body)}", status)
    return ServerError(f"unexpected HTTP {status}: {_error_text(body)}", status)


def parse_retry_after(value: str | None, now: datetime | None = None) -> timedelta | None:
    """Retry-After as a duration: delay-seconds or an HTTP date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    try:
        return timedelta(seconds=max(0.0, float(value.strip())))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(timedelta(0), moment - (now or datetime.now(UTC)))


def _delivered(status: int, body: bytes, sent_ids: Sequence[str]) -> SendResult:
    """A 2xx body's per-message outcomes; an unreadable body is a server error (outcome unknown)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ServerError(
            f"HTTP {status} with a body that is not JSON: {_error_text(body)}", status
        )
    results = _field(payload, "results") if isinstance(payload, dict) else None
    if not isinstance(results, dict):
        return ServerError(f"HTTP {status} without a results object: {_error_text(body)}", status)
    outcomes: dict[str, MessageOutcome] = {}
    for key in sent_ids:
        entry = results.get(key)
        if type(entry) is dict and entry.get("success") is True:  # the common case, fast
            tracking_id = entry.get("trackingId")
            if type(tracking_id) is str and tracking_id and not tracking_id.isspace():
                outcomes[key] = Accepted(tracking_id)
                continue
        outcomes[key] = message_outcome(entry)
    return Delivered(outcomes)


def message_outcome(entry: object) -> MessageOutcome:
    """One entry of `results` read tolerantly: unknown fields ignored, field case ignored."""
    if entry is None:
        return Unknown("missing from the API's results")
    if type(entry) is not dict:
        return Unknown(f"unreadable result: {_clip(repr(entry))}")
    success = entry["success"] if "success" in entry else _field(entry, "success")
    if success is True:
        tracking_id = entry["trackingId"] if "trackingId" in entry else _field(entry, "trackingId")
        if isinstance(tracking_id, str) and tracking_id.strip():
            return Accepted(tracking_id)
        return Unknown("success without a tracking id")
    if success is not False:
        return Unknown(f"result without a boolean success: {_clip(json.dumps(entry))}")
    transient = _field(entry, "isTransientError")
    reason = _result_reason(entry)
    if transient is False:
        return Rejected(reason)
    if transient is True:
        return Transient(reason)
    return Transient(f"{reason} (isTransientError absent: taken as transient)")


def _field(mapping: Mapping[str, Any], name: str) -> Any:
    """mapping[name], else the first key equal to it ignoring case (PascalCase), else None."""
    if name in mapping:
        return mapping[name]
    lowered = name.lower()
    return next((v for k, v in mapping.items() if k.lower() == lowered), None)


def _result_reason(entry: Mapping[str, Any]) -> str:
    for name in _REASON_FIELDS:
        value = _field(entry, name)
        if isinstance(value, str) and value.strip():
            return _clip(value)
    transient = _field(entry, "isTransientError")
    return f"the API answered success false, isTransientError {json.dumps(transient)}"


def _says_too_large(body: bytes) -> bool:
    """Whether a 400 body says the batch has too many messages (Wiraya: bulkItemLimitExceeded)."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and _field(payload, "bulkItemLimitExceeded") is True:
        return True
    text = body.decode("utf-8", "replace").lower()
    return any(hint in text for hint in _TOO_LARGE_HINTS)


def _error_text(body: bytes) -> str:
    """An error body as one trimmed line: a JSON message, an HTML page's title, or the text."""
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return "(empty body)"
    if text.startswith("<"):
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        return _clip(f"HTML page: {title.group(1) if title else text}")
    try:
        payload = json.loads(text)
    except ValueError:
        return _clip(text)
    if isinstance(payload, str):
        return _clip(payload)
    if isinstance(payload, dict):
        parts = [str(payload[k]) for k in _REASON_FIELDS if isinstance(payload.get(k), str)]
        if "errors" in payload:
            parts.append(json.dumps(payload["errors"], ensure_ascii=False))
        if parts:
            return _clip("; ".join(parts))
    return _clip(json.dumps(payload, ensure_ascii=False))


def _clip(text: str) -> str:
    """Whitespace collapsed and cut to MAX_REASON_LENGTH characters."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_REASON_LENGTH else line[: MAX_REASON_LENGTH - 1] + "…"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    if name in headers:
        return headers[name]
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


# Safety and logging -----------------------------------------------------------------------------


def _refuse_plain_http(base_url: str, sandbox_hosts: Collection[str] = ()) -> None:
    """ValueError unless the URL is https, or http to this machine or a named sandbox host.

    ``sandbox_hosts`` is the explicit opt-in of WIRAYA_SANDBOX_HOSTS (docker-compose's
    ``sandbox`` service): hosts trusted to receive the key over plain http.
    """
    url = urlsplit(base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"base_url: must be an http(s) URL with a host, got {base_url!r}")
    trusted = is_local_host(url.hostname) or url.hostname.lower() in sandbox_hosts
    if url.scheme == "http" and not trusted:
        raise ValueError(
            f"base_url: refusing to send the API key over plain http to {url.hostname}; use https"
        )


def is_local_host(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mask_recipient(recipient: str) -> str:
    """A recipient fit for logs: "46701234567" -> "4670****567"; short ones are fully masked."""
    if len(recipient) < 8:
        return "****"
    return f"{recipient[:4]}****{recipient[-3:]}"


def _describe(exc: httpx.RequestError) -> str:
    """The error's kind and text; httpx errors carry no headers, so the key cannot leak here."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _log_result(batch: Sequence[Communication], result: SendResult, elapsed: float) -> None:
    milliseconds = elapsed * 1000
    if isinstance(result, RequestFailure):
        log.warning(
            "EnqueueCommunications: %d messages not sent (%s) after %.0f ms: %s",
            len(batch),
            type(result).__name__,
            milliseconds,
            result.reason,
        )
        return
    log.debug("EnqueueCommunications: %d messages answered in %.0f ms", len(batch), milliseconds)
    for message in batch:
        outcome = result.outcomes.get(message.client_message_id)
        if outcome is not None and not isinstance(outcome, Accepted):
            log.info(
                "message %s to %s: %s: %s",
                message.client_message_id,
                mask_recipient(message.recipient),
                type(outcome).__name__,
                outcome.reason,
            )
