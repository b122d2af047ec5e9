"""The client of Wiraya's EnqueueCommunications API: one batch per call, a typed result for each.

One `WirayaClient` holds one pooled HTTP connection pool: create it once per process (the
dispatcher calls `WirayaClient.from_settings` once per worker process) and share it between
threads. A client inherited through `fork` opens a fresh pool in the child on first use, so
parent and child never share a socket. The API key is sent only in the `X-ApiKey` header, never
over plain HTTP except to this machine or a named sandbox host, and never logged; logged
recipients are masked. What a call can come to is drawn in `worker.wiraya.results`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import orjson

from worker.settings import is_local_host
from worker.wiraya.codec import encode_request, interpret_response
from worker.wiraya.results import (
    Accepted,
    BadRequest,
    Communication,
    Delivered,
    RequestFailure,
    SendResult,
    TransportError,
)

if TYPE_CHECKING:
    from worker.settings import Settings

log = logging.getLogger(__name__)

ENDPOINT_PATH = "/api/EnqueueCommunications"
API_KEY_HEADER = "X-ApiKey"  # exactly this spelling: Wiraya's server has been case-sensitive
DEFAULT_CONNECT_TIMEOUT = timedelta(seconds=10)


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

    def send(self, batch: Sequence[Communication], *, deadline: float | None = None) -> SendResult:
        """Send one batch in one request; never raises for HTTP or network problems.

        ``deadline`` (a ``time.monotonic()`` instant) cuts every phase's timeout to the time
        left, so no phase outlives it.
        """
        if not batch:
            return Delivered({})
        try:
            body = encode_request(batch)
        except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits in a content
            return BadRequest(f"a message cannot be encoded as JSON: {exc}")
        timeout = self._timeout
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return TransportError("the request's deadline passed before it was sent")
            timeout = httpx.Timeout(
                min(left, self._timeout.read or left),
                connect=min(left, self._timeout.connect or left),
            )
        started = time.perf_counter()
        try:
            response = self._pool().post(self._url, content=body, timeout=timeout)
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
