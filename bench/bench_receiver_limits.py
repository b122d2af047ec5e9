"""The receiver facing the internet: memory per MiB of body, how long a half-sent request is held.

1. Memory: Python's allocations (tracemalloc, peak above the start) while the receiver parses,
   stores and answers one body on PostgreSQL, per MiB of body; bodies of 1 and 4 MiB made of
   small reports (the worst case: the most reports per byte) and of reports as the template of
   docs/delivery-reports.md#wirayas-side-the-callback-template writes them. The body's own
   bytes are not counted (the request holds them).
2. A connection that sends half its headers: seconds until the receiver closes it, as
   `outbox receiver` configures uvicorn (given up after 45 s).

Run: .venv/bin/python bench/bench_receiver_limits.py
(Against another tree's code: PYTHONPATH=<tree> .venv/bin/python bench/bench_receiver_limits.py)
"""

from __future__ import annotations

import gc
import socket
import threading
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import support
import uvicorn
from sqlalchemy import Engine

from worker.database import make_engine
from worker.reports import app as receiver_app
from worker.settings import ReceiverSettings

DATABASE = "outbox_bench_receiver_limits"
AUTH = "bench:" + "5f0c7d2a9e3b4816"
MIB = 1024 * 1024
GIVE_UP = 45.0
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def small(number: int) -> dict[str, Any]:
    return {"trackingId": f"{number:x}", "status": "DELIVERED"}


def templated(number: int) -> dict[str, Any]:
    return {
        "trackingId": f"{number:032x}",
        "status": "DELIVERED",
        "recipient": "46701234567",
        "doneAt": (NOW - timedelta(seconds=number % 600)).isoformat(),
    }


def body_of(size: int, report: Any, first: int) -> bytes:
    """A JSON array of reports just under ``size`` bytes, numbered from ``first``."""
    one = len(orjson.dumps(report(10**9))) + 1
    return orjson.dumps([report(first + n) for n in range(size // one)])


def receiver(engine: Engine) -> Any:
    settings = ReceiverSettings.from_environ(
        {"OUTBOX_CALLBACK_AUTH": AUTH, "OUTBOX_DATABASE_URL": str(engine.url)}
    )
    app = receiver_app.create_app(engine, settings, clock=lambda: NOW)
    route = next(route for route in app.routes if route.path == receiver_app.CALLBACK_PATH)  # type: ignore[attr-defined]
    return route.endpoint.__self__  # the Receiver behind the route


def peak_per_mib(engine: Engine, body: bytes) -> float:
    """MiB allocated at the peak of one request's parse, store and answer, per MiB of body."""
    handler = receiver(engine)
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    start = tracemalloc.get_traced_memory()[0]
    answer = handler._receive(body)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert answer.status_code == 200, answer.body[:200]
    return (peak - start) / len(body)


def memory(url: str) -> None:
    support.heading("memory per MiB of body (tracemalloc peak, parse + store + answer)")
    first = 0
    for name, report in (("small reports", small), ("template reports", templated)):
        for mib in (1, 4):
            engine = make_engine(url)
            body = body_of(mib * MIB, report, first)
            first += 10**6
            count = len(orjson.loads(body))
            ratio = peak_per_mib(engine, body)
            print(f"  {name:<17} {mib} MiB ({count:>6,} reports): {ratio:6.1f} MiB per MiB")
            engine.dispose()


def held_seconds(url: str) -> str:
    """Seconds until the receiver closes a connection that sent half its headers."""
    engine = make_engine(url)
    settings = ReceiverSettings.from_environ(
        {"OUTBOX_CALLBACK_AUTH": AUTH, "OUTBOX_DATABASE_URL": url}
    )
    app = receiver_app.create_app(engine, settings)
    try:
        from worker.reports.server import server_config

        config = server_config(app, settings, log_level="warning")
    except ImportError:  # a tree without the read deadline
        config = uvicorn.Config(app, lifespan="off", log_level="warning")
    sock = support_socket()
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with socket.create_connection(sock.getsockname()) as client:
            client.sendall(b"POST /wiraya/callbacks HTTP/1.1\r\nHost: receiver\r\nContent-Le")
            client.settimeout(GIVE_UP)
            began = time.monotonic()
            try:
                while client.recv(65536):
                    pass
            except TimeoutError:
                return f"still open after {GIVE_UP:.0f} s"
            except ConnectionResetError:
                pass
            return f"closed after {time.monotonic() - began:.1f} s"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        engine.dispose()


def support_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def main() -> None:
    with support.scratch_database(DATABASE) as url:
        memory(url)
        support.heading("a connection sending half its headers")
        print(f"  {held_seconds(url)}")


if __name__ == "__main__":
    main()
