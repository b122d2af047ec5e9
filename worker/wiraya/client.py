"""The client of Wiraya's EnqueueCommunications API: one batch per call, a typed result for each.

One `WirayaClient` holds one connection pool (httpcore, httpx's transport): create it once per
process (the dispatcher calls `WirayaClient.from_settings` once per worker process) and share it
between threads. A client inherited through `fork` opens a fresh pool in the child on first use,
so parent and child never share a socket.

Every request ends by one instant: the caller's `deadline`, or WIRAYA_TIMEOUT_SECONDS after it
started if that comes first, name lookup, connect, TLS, write and a trickling answer all
included (`worker.wiraya.deadline`). Answers larger than `codec.MAX_ANSWER_BYTES` are not read.
Proxy variables are ignored for a local sandbox and honoured for the real API
(`worker.wiraya.proxies`). The API key is sent only in the `X-ApiKey` header, never over plain
HTTP except to this machine or a named sandbox host, and never logged; logged recipients are
masked. What a call can come to is drawn in `worker.wiraya.results`.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
import traceback
from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpcore
import httpx

from worker import tracing
from worker.setting_values import is_local_host
from worker.wiraya.codec import MAX_ANSWER_BYTES, encode_request, interpret_response
from worker.wiraya.deadline import (
    DEADLINE_PASSED,
    BoundedBackend,
    RequestClock,
    Watchdog,
    bounded_by,
    request_ends_at,
)
from worker.wiraya.proxies import proxy_address, proxy_for
from worker.wiraya.redaction import Redactor
from worker.wiraya.results import (
    Accepted,
    Answered,
    BadRequest,
    Communication,
    RequestFailure,
    SendResult,
    TransportError,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from worker.settings import Settings

log = logging.getLogger(__name__)
# httpcore's DEBUG trace logs each exception as it meets it, before `send` can redact it: h11's
# refusal of a header quotes the header's value, the API key. Its trace stays off, whatever the
# root logger's level; what failed is in the result's reason and the warning below.
logging.getLogger("httpcore").setLevel(logging.INFO)

ENDPOINT_PATH = "/api/EnqueueCommunications"
API_KEY_HEADER = "X-ApiKey"  # exactly this spelling: Wiraya's server has been case-sensitive
DEFAULT_CONNECT_TIMEOUT = timedelta(seconds=10)
# Every way httpcore says a request got no answer: the API may have done the work or not.
_NO_ANSWER = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
    httpcore.ConnectionNotAvailable,
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
        secret: bool = True,
    ) -> None:
        local = _refuse_plain_http(base_url, sandbox_hosts)
        if not api_key:
            raise ValueError("api_key: must not be empty")
        if any(char < " " or char == "\x7f" for char in api_key):
            raise ValueError("api_key: must not hold control characters or line breaks")
        # A sandbox's stand-in key is no secret: texts that name it stay as they are.
        self._redactor = Redactor(api_key if secret else None)
        self._url = base_url.rstrip("/") + ENDPOINT_PATH
        self._headers = [
            (API_KEY_HEADER.encode(), api_key.encode()),
            (b"Content-Type", b"application/json; charset=utf-8"),
            (b"Accept", b"application/json"),
            (b"User-Agent", b"wiraya-outbox"),
        ]
        self._timeout = timeout
        self._connect_timeout = min(timeout, connect_timeout or DEFAULT_CONNECT_TIMEOUT)
        self._proxy = proxy_for(base_url, local=local)
        self._ssl_context = _tls_context(base_url, self._proxy)
        if self._proxy is not None:
            log.info(
                "EnqueueCommunications at %s through the proxy %s",
                base_url,
                proxy_address(self._proxy),
            )
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._http, self._watchdog = self._new_pool()

    @classmethod
    def from_settings(cls, settings: Settings) -> WirayaClient:
        """A client for the configured API; create one per process and reuse it."""
        return cls(
            settings.wiraya_base_url,
            settings.api_key,
            settings.wiraya_timeout,
            sandbox_hosts=settings.sandbox_hosts,
            secret=settings.wiraya_api_key is not None,
        )

    @classmethod
    def for_key(cls, settings: Settings, api_key: str) -> WirayaClient:
        """A client like ``from_settings``'s, under another key (a tenant's own)."""
        return cls(
            settings.wiraya_base_url,
            api_key,
            settings.wiraya_timeout,
            sandbox_hosts=settings.sandbox_hosts,
        )

    @property
    def max_request_duration(self) -> timedelta:
        """The longest one `send` may be in flight (WIRAYA_TIMEOUT_SECONDS); a lease covers it."""
        return self._timeout

    def send(self, batch: Sequence[Communication], *, deadline: float | None = None) -> SendResult:
        """Send one batch in one request; never raises.

        The request ends by `deadline` (a `time.monotonic()` instant) or `max_request_duration`
        after the call, whichever is first; past it the result is a TransportError saying the
        deadline passed (outcome unknown).
        """
        if not batch:
            return Answered({})
        started = time.monotonic()
        try:
            with tracing.request_span(self._url, len(batch)) as span:
                ends_at = request_ends_at(started, self._timeout, deadline)
                result = self._send(batch, ends_at, started, span)
        except Exception as exc:  # a defect, not an answer: the API may have the work
            trace = "".join(traceback.format_exception(exc))
            log.error(
                "EnqueueCommunications: unexpected error while sending\n%s",
                self._redactor.text(trace),
            )
            result = TransportError(f"unexpected {type(exc).__name__} (outcome unknown): {exc}")
        # The one place a failure becomes text for the rest of the outbox: without the key.
        result = self._redactor.result(result)
        _log_result(batch, result, time.monotonic() - started)
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

    def _send(
        self, batch: Sequence[Communication], ends_at: float, started: float, span: Span | None
    ) -> SendResult:
        try:
            body = encode_request(batch)
        except (TypeError, ValueError) as exc:  # an integer beyond 64 bits, a content not a dict
            return BadRequest(f"a message cannot be encoded as JSON: {exc}")
        if ends_at <= time.monotonic():
            return TransportError(
                f"{DEADLINE_PASSED} before the request was sent: nothing was sent"
            )
        clock = RequestClock(ends_at)
        http, watchdog = self._pool()
        with bounded_by(clock, watchdog):
            try:
                status, headers, answer = self._exchange(http, body, clock)
            except _NO_ANSWER as exc:
                failed = _no_answer(exc, clock, started)
                tracing.note_answer(span, None, type(failed).__name__)
                return failed
        sent_ids = [message.client_message_id for message in batch]
        result = interpret_response(status, headers, answer, sent_ids)
        tracing.note_answer(span, status, type(result).__name__)
        return result

    def _exchange(
        self, http: httpcore.ConnectionPool, body: bytes, clock: RequestClock
    ) -> tuple[int, dict[str, str], bytes]:
        """POST the body; the status, headers and at most MAX_ANSWER_BYTES + 1 of the answer."""
        timeout = self._timeout.total_seconds()
        timeouts = {
            "connect": clock.left(self._connect_timeout.total_seconds(), httpcore.ConnectTimeout),
            "read": clock.left(timeout, httpcore.ReadTimeout),
            "write": clock.left(timeout, httpcore.WriteTimeout),
            "pool": clock.left(timeout, httpcore.PoolTimeout),
        }
        with http.stream(
            "POST",
            self._url,
            headers=self._headers,
            content=body,
            extensions={"timeout": timeouts},
        ) as response:
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_stream():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_ANSWER_BYTES:  # the codec refuses it; the rest is never read
                    break
            headers = {
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in response.headers
            }
            return response.status, headers, b"".join(chunks)

    def _new_pool(self) -> tuple[httpcore.ConnectionPool, Watchdog]:
        limits = {
            "max_connections": 64,
            "max_keepalive_connections": 16,
            "keepalive_expiry": 5.0,
            "network_backend": BoundedBackend(),
            "ssl_context": self._ssl_context,
        }
        if self._proxy is None:
            return httpcore.ConnectionPool(**limits), Watchdog()  # type: ignore[arg-type]
        proxy = httpx.Proxy(self._proxy)  # the credentials of a URL become Proxy-Authorization
        pool = httpcore.HTTPProxy(
            proxy_url=str(proxy.url),
            proxy_auth=proxy.raw_auth,
            proxy_headers=proxy.headers.raw,
            **limits,  # type: ignore[arg-type]
        )
        return pool, Watchdog()

    def _pool(self) -> tuple[httpcore.ConnectionPool, Watchdog]:
        """This process's pool: after a fork the child opens its own instead of sharing sockets."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    _inherited.append(self._http)  # the parent's sockets: never touch, never close
                    self._http, self._watchdog = self._new_pool()
                    self._pid = os.getpid()
        return self._http, self._watchdog


_inherited: list[httpcore.ConnectionPool] = []


def _tls_context(base_url: str, proxy: str | None) -> ssl.SSLContext | None:
    """httpx's TLS context (certifi, or SSL_CERT_FILE / SSL_CERT_DIR) when TLS is spoken."""
    schemes = {urlsplit(base_url).scheme, urlsplit(proxy).scheme if proxy else ""}
    return httpx.create_ssl_context() if "https" in schemes else None


def _no_answer(exc: Exception, clock: RequestClock, started: float) -> TransportError:
    """The request got no answer: say whether its deadline ended it."""
    if clock.expired or time.monotonic() >= clock.ends_at:
        elapsed = (time.monotonic() - started) * 1000
        return TransportError(
            f"timed out: {DEADLINE_PASSED} after {elapsed:.0f} ms, outcome unknown "
            f"({_describe(exc)})"
        )
    unconnected = isinstance(exc, httpcore.ConnectError | httpcore.ConnectTimeout)
    if isinstance(exc, httpcore.TimeoutException):
        return TransportError(f"timed out: {_describe(exc)}", unconnected=unconnected)
    return TransportError(_describe(exc), unconnected=unconnected)


# Safety and logging -----------------------------------------------------------------------------


def _refuse_plain_http(base_url: str, sandbox_hosts: Collection[str] = ()) -> bool:
    """ValueError unless the URL is https, or http to this machine or a named sandbox host.

    ``sandbox_hosts`` is the explicit opt-in of WIRAYA_SANDBOX_HOSTS (docker-compose's
    ``sandbox`` service): hosts trusted to receive the key over plain http. Returns whether the
    host is such a local sandbox.
    """
    url = urlsplit(base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"base_url: must be an http(s) URL with a host, got {base_url!r}")
    trusted = is_local_host(url.hostname) or url.hostname.lower() in sandbox_hosts
    if url.scheme == "http" and not trusted:
        raise ValueError(
            f"base_url: refusing to send the API key over plain http to {url.hostname}; use https"
        )
    return trusted


def mask_recipient(recipient: str) -> str:
    """A recipient fit for logs: "46701234567" -> "4670****567"; short ones are fully masked."""
    if len(recipient) < 8:
        return "****"
    return f"{recipient[:4]}****{recipient[-3:]}"


def _describe(exc: Exception) -> str:
    """The error's kind and text (which may quote a header: `send` redacts the key from it)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _log_result(batch: Sequence[Communication], result: SendResult, elapsed: float) -> None:
    milliseconds = elapsed * 1000
    if isinstance(result, RequestFailure):
        # INFO: the batch's summary warns once per change of state (worker.dispatch.summary);
        # a warning per request would be one per probe through a whole outage.
        log.info(
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
