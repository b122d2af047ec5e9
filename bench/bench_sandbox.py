"""Throughput of the sandbox: messages per second it accepts in batches of 500.

Run: .venv/bin/python bench/bench_sandbox.py [--seconds 5] [--batch 500] [--threads 2]

The sandbox runs as its own process (`python -m sandbox`), as `outbox sandbox` would.
Two figures are printed, each from client threads of this process over keep-alive connections:
- "sandbox": bodies encoded before the clock starts and sent with http.client, so the figure is
  the sandbox's own capacity (what the issue asks: the sandbox must not be the bottleneck);
- "through WirayaClient": the real client encodes, sends and parses every batch.
On a 2-core machine client and sandbox share the cores, so both figures understate the sandbox.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from urllib.parse import urlsplit

import orjson
import support

from sandbox.testing import SandboxAdmin
from worker.wiraya.client import WirayaClient
from worker.wiraya.codec import encode_request
from worker.wiraya.results import Answered, Communication

PATH = "/api/EnqueueCommunications"
CONTENT = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John", "Order #5678"]}
HEADERS = {"X-ApiKey": "bench", "Content-Type": "application/json"}


def batch_of(ids: Iterator[int], size: int) -> list[Communication]:
    """A batch of messages never sent before (next() on a count is atomic under the GIL)."""
    return [Communication(f"bench-{next(ids)}", "46701234567", CONTENT) for _ in range(size)]


def raw_sender(url: str, bodies: list[bytes], size: int, deadline: float) -> int:
    """Post pre-encoded bodies on one keep-alive connection until the deadline; messages sent."""
    host, port = urlsplit(url).hostname or "", urlsplit(url).port
    connection = http.client.HTTPConnection(host, port, timeout=30)
    accepted = 0
    try:
        for body in bodies:
            if time.monotonic() >= deadline:
                break
            connection.request("POST", PATH, body, HEADERS)
            response = connection.getresponse()
            answered = response.read()
            if response.status != 200 or len(orjson.loads(answered)["results"]) != size:
                raise SystemExit(
                    f"the sandbox failed a batch: {response.status} {answered[:200]!r}"
                )
            accepted += size
    finally:
        connection.close()
    return accepted


def client_sender(client: WirayaClient, ids: Iterator[int], size: int, deadline: float) -> int:
    """Send fresh batches through the real client until the deadline; messages accepted."""
    accepted = 0
    while time.monotonic() < deadline:
        result = client.send(batch_of(ids, size))
        if not isinstance(result, Answered):
            raise SystemExit(f"the sandbox failed a batch: {result}")
        accepted += len(result.outcomes)
    return accepted


def measure(threads: int, seconds: float, work: Callable[[float], int]) -> tuple[int, float]:
    """Run `work(deadline)` on `threads` threads; total messages and elapsed seconds."""
    totals = [0] * threads
    deadline = time.monotonic() + seconds
    started = time.perf_counter()

    def run(slot: int) -> None:
        totals[slot] = work(deadline)

    workers = [threading.Thread(target=run, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(totals), time.perf_counter() - started


def report(label: str, total: int, elapsed: float, size: int, threads: int) -> None:
    print(
        f"{label}: {total / elapsed:,.0f} messages/s "
        f"({total:,} messages in batches of {size}, {threads} client threads, {elapsed:.1f} s)"
    )


def run(seconds: float, size: int, threads: int) -> None:
    """Measure and print both figures."""
    ids = itertools.count()
    with support.sandbox() as server:
        url = server.url
        # Enough bodies for a fast sandbox; each thread takes its own, all with new ids.
        per_thread = int(seconds * 400) + 10
        bodies = [
            [encode_request(batch_of(ids, size)) for _ in range(per_thread)] for _ in range(threads)
        ]
        raw_sender(url, [encode_request(batch_of(ids, size))] * 20, size, time.monotonic() + 1)
        queues = iter(bodies)
        lock = threading.Lock()

        def raw(deadline: float) -> int:
            with lock:
                mine = next(queues)
            return raw_sender(url, mine, size, deadline)

        report("sandbox", *measure(threads, seconds, raw), size, threads)
        with WirayaClient(url, "bench", timedelta(seconds=30)) as client:
            client_sender(client, ids, size, time.monotonic() + 0.5)  # open the connections
            total, elapsed = measure(
                threads, seconds, lambda deadline: client_sender(client, ids, size, deadline)
            )
        report("through WirayaClient", total, elapsed, size, threads)
        stats = SandboxAdmin(url).stats()
    print(f"sandbox's busiest second: {stats['peak_messages_per_second']:,} messages")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    parser.add_argument("--batch", type=int, default=500, help="messages per request")
    parser.add_argument("--threads", type=int, default=2, help="client threads")
    args = parser.parse_args()
    run(args.seconds, args.batch, args.threads)


if __name__ == "__main__":
    main()
