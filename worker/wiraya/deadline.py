"""One wall-clock deadline over a whole request: name lookup, connect, TLS, write and read.

httpcore applies its timeouts to each phase and each socket call, so an answer trickling in a
few bytes at a time outlives all of them, and the worker's lease with it. Here the network
backend under the connection pool gives every socket call of a request at most the time left to
the request's deadline (and starts none after it), and a watchdog thread shuts the request's
socket down at the deadline, so a call still blocked then (a send to a server that keeps taking
a large body slowly, a stalled TLS handshake) returns at once. Name lookup runs on a helper
thread so that it is bounded too. Past the deadline nothing more is written.

The request's clock travels in a context variable set by the client around the request: a
connection is used by one request at a time, on the thread that sends it.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

import httpcore

DEADLINE_PASSED = "the request's deadline passed"
WRITE_CHUNK = 64 * 1024  # a body goes out in pieces, each bounded by the time then left


def request_ends_at(started: float, timeout: timedelta, deadline: float | None) -> float:
    """The `time.monotonic()` instant a request started at `started` must end by."""
    ends_at = started + timeout.total_seconds()
    return ends_at if deadline is None else min(ends_at, deadline)


class RequestClock:
    """The deadline of one request, and the sockets it uses (for the watchdog to shut)."""

    def __init__(self, ends_at: float) -> None:
        self.ends_at = ends_at
        self.expired = False
        self._finished = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def left(self, timeout: float | None, error: type[Exception]) -> float:
        """The time a socket call may take: `timeout` or less; `error` once the deadline passed."""
        left = self.ends_at - time.monotonic()
        if left <= 0 or self.expired:
            raise error(DEADLINE_PASSED)
        return left if timeout is None else min(timeout, left)

    def attach(self, sock: socket.socket) -> None:
        """Note a socket of this request; shut it at once if the deadline already passed."""
        with self._lock:
            if self._finished:
                return
            if sock not in self._sockets:
                self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def expire(self) -> None:
        """The deadline passed: shut this request's sockets down, unless it finished."""
        with self._lock:  # held while shutting, so a finished request's socket is never touched
            if self._finished:
                return
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def finish(self) -> None:
        """The request is over: its sockets go back to the pool, out of the watchdog's reach."""
        with self._lock:
            self._finished = True
            self._sockets.clear()


def _shut(sock: socket.socket) -> None:
    # socket.socket's own shutdown: on a TLS socket it ends the connection under the TLS layer
    # without touching the TLS state another thread may be using.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Watchdog:
    """A thread that expires each watched request at its deadline; it ends when none is left."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, RequestClock]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._running = False

    def watch(self, clock: RequestClock) -> None:
        """Expire `clock` at its deadline (a finished clock is left alone)."""
        with self._changed:
            heapq.heappush(self._due, (clock.ends_at, next(self._order), clock))
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="wiraya-deadlines", daemon=True).start()
            self._changed.notify()

    def _run(self) -> None:
        while (clock := self._next_due()) is not None:
            clock.expire()

    def _next_due(self) -> RequestClock | None:
        with self._changed:
            while self._due:
                ends_at, _, clock = self._due[0]
                wait = ends_at - time.monotonic()
                if wait <= 0:
                    heapq.heappop(self._due)
                    return clock
                self._changed.wait(wait)
            self._running = False
            return None


_current: ContextVar[RequestClock | None] = ContextVar("wiraya_request_clock", default=None)


@contextlib.contextmanager
def bounded_by(clock: RequestClock, watchdog: Watchdog) -> Iterator[None]:
    """Bound every socket call made in the block by `clock`, and have `watchdog` watch it."""
    token = _current.set(clock)
    watchdog.watch(clock)
    try:
        yield
    finally:
        clock.finish()
        _current.reset(token)


class BoundedBackend(httpcore.NetworkBackend):
    """httpcore's synchronous sockets, each call bounded by the current request's clock."""

    def __init__(self) -> None:
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        clock = _current.get()
        if clock is None:
            return _BoundedStream(
                self._sockets.connect_tcp(host, port, timeout, local_address, socket_options)
            )
        error: Exception = httpcore.ConnectError(f"no address found for {host}")
        for address in _look_up(host, port, clock.left(timeout, httpcore.ConnectTimeout)):
            bound = clock.left(timeout, httpcore.ConnectTimeout)
            try:
                stream = self._sockets.connect_tcp(
                    address, port, bound, local_address, socket_options
                )
            except httpcore.ConnectError as exc:  # the next address may answer
                error = exc
                continue
            return _BoundedStream(stream)
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _BoundedStream(self._sockets.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._sockets.sleep(seconds)


class _BoundedStream(httpcore.NetworkStream):
    """One connection's socket: reads, writes and the TLS handshake bounded by the clock."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream
        self._attached: RequestClock | None = None

    def _clock(self) -> RequestClock | None:
        clock = _current.get()
        if clock is not None and clock is not self._attached:
            sock = self._stream.get_extra_info("socket")
            if isinstance(sock, socket.socket):
                clock.attach(sock)
            self._attached = clock
        return clock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        clock = self._clock()
        bound = timeout if clock is None else clock.left(timeout, httpcore.ReadTimeout)
        return self._stream.read(max_bytes, bound)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        clock = self._clock()
        if clock is None:
            self._stream.write(buffer, timeout)
            return
        for start in range(0, len(buffer), WRITE_CHUNK):
            bound = clock.left(timeout, httpcore.WriteTimeout)
            self._stream.write(buffer[start : start + WRITE_CHUNK], bound)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        clock = self._clock()
        bound = timeout if clock is None else clock.left(timeout, httpcore.ConnectTimeout)
        return _BoundedStream(self._stream.start_tls(ssl_context, server_hostname, bound))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


def _look_up(host: str, port: int, timeout: float) -> list[str]:
    """The host's addresses, looked up on a helper thread so the wait is bounded."""
    with contextlib.suppress(ValueError):
        return [str(ipaddress.ip_address(host))]
    found: list[str] = []
    failure: list[OSError] = []
    done = threading.Event()

    def look_up() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found.extend(dict.fromkeys(str(info[4][0]) for info in infos))
        except OSError as exc:
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=look_up, name="wiraya-lookup", daemon=True).start()
    if not done.wait(timeout):
        raise httpcore.ConnectTimeout(f"looking up {host}: {DEADLINE_PASSED}")
    if failure:
        raise httpcore.ConnectError(f"cannot look up {host}: {failure[0]}")
    return found
