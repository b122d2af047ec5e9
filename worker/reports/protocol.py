"""The receiver's HTTP protocol: uvicorn's h11 protocol with a deadline for a request to arrive.

uvicorn closes a keep-alive connection left idle, but not one that sends part of a request: a
client sending half its headers, or its body a byte at a time, held a connection as long as
it liked. Here each request must arrive whole (request line, headers and body) within the read
timeout, counted from the connection's opening for its first request and from the end of the
previous answer for the next ones; otherwise the connection is closed. The time the
application takes to answer is not counted.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

ARRIVING = (h11.IDLE, h11.SEND_BODY)  # the client's states until its request is whole


class DeadlineProtocol(H11Protocol):
    """H11Protocol closing a connection whose request does not arrive whole in time."""

    read_timeout = 10.0  # seconds; `with_read_timeout` makes a class with another value
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Arm the deadline while a request is arriving; disarm it once it has arrived."""
        if self.transport.is_closing() or self.conn.their_state not in ARRIVING:
            self._disarm()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing() and self.conn.their_state in ARRIVING:
            self.transport.close()


def with_read_timeout(seconds: float) -> type[DeadlineProtocol]:
    """DeadlineProtocol with a read timeout of ``seconds``."""
    return type("DeadlineProtocol", (DeadlineProtocol,), {"read_timeout": seconds})
