"""The receiver facing the internet: half-sent requests closed, connections limited, and an
event loop that never waits for Redis."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis
from sqlalchemy import Engine

from tests.integration.reports.harness import serving
from tests.integration.reports.test_app import AUTH, LOGIN, PATH, basic
from worker.database import make_engine
from worker.reports.app import create_app
from worker.reports.server import server_config
from worker.settings import ReceiverSettings

GUARD = 30.0  # seconds a socket waits before the test gives up: never reached when it passes


def receiver_settings(engine: Engine, **extra: str) -> ReceiverSettings:
    url = engine.url.render_as_string(hide_password=False)
    return ReceiverSettings.from_environ(
        {"OUTBOX_CALLBACK_AUTH": AUTH, "OUTBOX_DATABASE_URL": url, **extra}
    )


@contextmanager
def receiver(
    engine: Engine, counters_client: redis.Redis | None = None, **extra: str
) -> Iterator[tuple[str, int]]:
    """The receiver as `outbox receiver` configures uvicorn; yields its base URL and port."""
    settings = receiver_settings(engine, **extra)
    app = create_app(engine, settings, counters_client=counters_client)
    config = server_config(app, settings, log_level="warning")
    with serving(app, config=config) as base:
        yield base, int(base.rsplit(":", 1)[1])


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes ``sock`` (reads to the end; a timeout means it never did)."""
    sock.settimeout(GUARD)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # connected, says nothing
        b"POST /wiraya/callbacks HTTP/1.1\r\nHost: receiver\r\nContent-Le",  # half the headers
        b"POST /wiraya/callbacks HTTP/1.1\r\nHost: receiver\r\nContent-Length: 1000\r\n"
        b"Authorization: " + basic(AUTH)["Authorization"].encode() + b"\r\n\r\n[{",  # half a body
    ],
    ids=["nothing", "half-headers", "half-body"],
)
def test_a_request_that_does_not_arrive_whole_is_closed(sqlite_url: str, sent: bytes) -> None:
    engine = make_engine(sqlite_url)
    with (
        receiver(engine, OUTBOX_CALLBACK_READ_TIMEOUT_SECONDS="1") as (_, port),
        socket.create_connection(("127.0.0.1", port)) as sock,
    ):
        sock.sendall(sent)
        assert closed_by_server(sock)
    engine.dispose()


def test_a_keep_alive_connection_answered_once_is_held_to_the_deadline_again(
    sqlite_url: str,
) -> None:
    engine = make_engine(sqlite_url)
    with (
        receiver(engine, OUTBOX_CALLBACK_READ_TIMEOUT_SECONDS="1") as (_, port),
        socket.create_connection(("127.0.0.1", port)) as sock,
    ):
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: receiver\r\n\r\n")
        assert b"200 OK" in sock.recv(65536)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: rec")  # and then nothing
        assert closed_by_server(sock)
    engine.dispose()


def test_connections_past_the_limit_are_answered_503(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with receiver(engine, OUTBOX_CALLBACK_MAX_CONNECTIONS="2") as (base, port):
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        try:
            answer = httpx.get(f"{base}/health", timeout=GUARD)
        finally:
            for sock in held:
                sock.close()
        assert answer.status_code == 503
    engine.dispose()


@contextmanager
def silent_redis() -> Iterator[int]:
    """A server that accepts Redis connections, reads commands and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for sock in accepted:
            sock.close()
        listener.close()


@pytest.mark.parametrize(
    ("headers", "body", "code"),
    [({}, b"[]", 401), (LOGIN, b"[" + b" " * 2048 + b"]", 413)],
    ids=["401", "413"],
)
def test_a_redis_that_never_answers_holds_no_answer(
    sqlite_url: str, headers: dict[str, str], body: bytes, code: int
) -> None:
    engine = make_engine(sqlite_url)
    with silent_redis() as redis_port:
        # No socket timeout: a call to it on the event loop would hold every answer for good.
        counters = redis.Redis(port=redis_port, socket_timeout=None)
        with (
            receiver(engine, counters, OUTBOX_CALLBACK_MAX_BODY_BYTES="1024") as (base, _),
            httpx.Client(base_url=base, timeout=GUARD) as client,
        ):
            assert _post(client, base, body, headers) == code
            assert client.get("/health").status_code == 200
            assert _post(client, base, body, headers) == code
    engine.dispose()


def _post(client: httpx.Client, base: str, body: bytes, headers: dict[str, str]) -> int:
    """The answer's status. A body over the limit is only declared: the receiver answers 413
    from Content-Length and closes, and body bytes it never read would make the peer's
    kernel reset the connection, sometimes before the client read the answer."""
    if len(body) <= 1024:
        return client.post(PATH, content=body, headers=headers).status_code
    url = httpx.URL(base)
    lines = [f"POST {PATH} HTTP/1.1", f"Host: {url.host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((url.host, url.port or 80), timeout=GUARD) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status_line = connection.makefile("rb").readline()
    return int(status_line.split()[1])
