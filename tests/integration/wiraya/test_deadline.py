"""One wall-clock deadline per request: connect, write, headers and a trickling body, together.

Each server here keeps the connection busy (a byte now and then, or reading slowly), so no
per-read or per-write timeout ever fires: only a deadline over the whole request ends it. The
bounds asserted are correctness bounds (the call must return by its deadline, with room for a
loaded machine), far below what the server would take.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest

from sandbox.faults import Faults
from sandbox.testing import RunningSandbox, running_sandbox
from worker.ops.processes import wait_for
from worker.wiraya.client import WirayaClient
from worker.wiraya.results import (
    Accepted,
    Answered,
    Communication,
    SendResult,
    TransportError,
)

KEY = "key"
PROJECT = {"$type": "SMSProject", "projectId": 7, "placeholders": ["Ada"]}
SLACK = 2.5  # seconds a loaded two-core machine may add to a deadline


def sms(client_message_id: str, placeholder: str = "Ada") -> Communication:
    return Communication(
        client_message_id, "46701234567", {**PROJECT, "placeholders": [placeholder]}
    )


@pytest.fixture
def trickling() -> Iterator[RunningSandbox]:
    """A sandbox whose answers take 10 s to trickle in, a few bytes every fraction of a second."""
    with running_sandbox(Faults(trickle=timedelta(seconds=10))) as sandbox:
        yield sandbox


def timed(call: Callable[[], SendResult], bound: float) -> tuple[SendResult | None, float]:
    """Run `call` on a thread; its result and duration, or None if it outlived `bound` seconds."""
    outcome: list[SendResult] = []
    thread = threading.Thread(target=lambda: outcome.append(call()), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(bound)
    return (outcome[0] if outcome else None), time.monotonic() - started


def assert_deadline_passed(result: SendResult | None) -> None:
    assert isinstance(result, TransportError), result
    assert "deadline passed" in result.reason
    assert "outcome unknown" in result.reason


# A trickling answer -----------------------------------------------------------------------------


def test_a_trickling_answer_ends_at_the_timeout(trickling: RunningSandbox) -> None:
    with WirayaClient(trickling.url, KEY, timedelta(seconds=1)) as client:
        result, took = timed(lambda: client.send([sms("t")]), bound=1 + SLACK)

    assert_deadline_passed(result)
    assert took < 1 + SLACK
    assert trickling.entry("t") is not None  # the work was done: the outcome is unknown
    wait_for(lambda: trickling.stats()["hung_up"], timeout=10, what="the client to hang up")


def test_a_deadline_before_the_timeout_ends_the_request_there(trickling: RunningSandbox) -> None:
    with WirayaClient(trickling.url, KEY, timedelta(seconds=60)) as client:
        deadline = time.monotonic() + 1.0
        result, took = timed(lambda: client.send([sms("d")], deadline=deadline), bound=1 + SLACK)

    assert_deadline_passed(result)
    assert took < 1 + SLACK


def test_a_deadline_already_passed_sends_nothing(trickling: RunningSandbox) -> None:
    with WirayaClient(trickling.url, KEY, timedelta(seconds=5)) as client:
        result = client.send([sms("late")], deadline=time.monotonic() - 0.1)

    assert isinstance(result, TransportError)
    assert "nothing was sent" in result.reason
    assert trickling.request_count == 0


def test_a_deadline_after_the_answer_changes_nothing() -> None:
    with (
        running_sandbox(Faults(trickle=timedelta(milliseconds=300))) as sandbox,
        WirayaClient(sandbox.url, KEY, timedelta(seconds=10)) as client,
    ):
        result = client.send([sms("fine")], deadline=time.monotonic() + 8)

    assert isinstance(result, Answered)
    assert isinstance(result.outcomes["fine"], Accepted)


def test_the_longest_a_request_may_take_is_the_timeout() -> None:
    with WirayaClient("http://127.0.0.1:9", KEY, timedelta(seconds=7)) as client:
        assert client.max_request_duration == timedelta(seconds=7)


def test_a_connection_kept_from_an_earlier_request_is_bounded_too() -> None:
    with (
        running_sandbox() as sandbox,
        WirayaClient(sandbox.url, KEY, timedelta(seconds=1)) as client,
    ):
        assert isinstance(client.send([sms("warm")]), Answered)  # the pool keeps the connection
        sandbox.set_faults(trickle=timedelta(seconds=10))

        result, _ = timed(lambda: client.send([sms("reused")]), bound=1 + SLACK)

    assert_deadline_passed(result)


# Servers that never let a per-call timeout fire -------------------------------------------------


@contextmanager
def raw_server(handle: Callable[[socket.socket], None]) -> Iterator[str]:
    """A TCP server on a free port running `handle` on each connection; yields its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    connections: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connections.append(connection)
            threading.Thread(target=handle, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        listener.close()
        for connection in connections:
            connection.close()


def read_request(connection: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += connection.recv(65536)


def answer_a_byte_at_a_time(connection: socket.socket) -> None:
    """Read the request, then send a valid answer one byte every 50 ms (headers included)."""
    body = b'{"results": {}}'
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    try:
        read_request(connection)
        for byte in reply % (len(body), body):
            connection.sendall(bytes([byte]))
            time.sleep(0.05)
    except OSError:
        return


def read_slowly(connection: socket.socket) -> None:
    """Take the request 64 KiB every 10 ms (fast enough that every send makes progress within
    a second, so no per-call write timeout fires), and never answer."""
    try:
        while connection.recv(65536):
            time.sleep(0.01)
    except OSError:
        return


def test_headers_trickling_in_end_at_the_timeout() -> None:
    with (
        raw_server(answer_a_byte_at_a_time) as url,
        WirayaClient(url, KEY, timedelta(seconds=1)) as client,
    ):
        result, _ = timed(lambda: client.send([sms("h")]), bound=1 + SLACK)

    assert_deadline_passed(result)


def test_a_body_a_slow_server_keeps_taking_ends_at_the_timeout() -> None:
    big = "x" * 40_000_000  # several seconds at the server's pace
    with raw_server(read_slowly) as url, WirayaClient(url, KEY, timedelta(seconds=1)) as client:
        result, _ = timed(lambda: client.send([sms("big", big)]), bound=1 + SLACK)

    assert_deadline_passed(result)
