"""Throughput of the sandbox: messages per second it accepts in batches of 500 via the real client.

Run: .venv/bin/python bench/bench_sandbox.py [--seconds 5] [--batch 500] [--threads 2]

The sandbox runs as its own process (`python -m sandbox --port 0`), as `outbox sandbox` would,
and client threads of this process send batches of unique messages through `WirayaClient`.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sandbox.testing import SandboxAdmin
from worker.wiraya import Communication, Delivered, WirayaClient

CONTENT = {"$type": "SMSProject", "projectId": 123, "placeholders": ["John", "Order #5678"]}


@contextmanager
def sandbox_process() -> Iterator[str]:
    """Start the sandbox on a free port in a child process; yield its URL; stop it after."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "sandbox listening on http://127.0.0.1:PORT ..."
        url = line.split()[3]
        SandboxAdmin(url).wait_ready()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def sender(client: WirayaClient, ids: Iterator[int], batch_size: int, deadline: float) -> int:
    """Send batches of fresh messages until the deadline; the number accepted."""
    accepted = 0
    while time.monotonic() < deadline:
        batch = [
            Communication(f"bench-{next(ids)}", "46701234567", CONTENT) for _ in range(batch_size)
        ]
        result = client.send(batch)
        if not isinstance(result, Delivered):
            raise SystemExit(f"the sandbox failed a batch: {result}")
        accepted += len(result.outcomes)
    return accepted


def run(seconds: float, batch_size: int, threads: int) -> None:
    """Measure and print messages per second."""
    with sandbox_process() as url, WirayaClient(url, "bench", timedelta(seconds=30)) as client:
        ids = itertools.count()  # next() on a count is atomic under the GIL
        sender(client, ids, batch_size, time.monotonic() + 0.5)  # warm up the connections
        totals = [0] * threads
        deadline = time.monotonic() + seconds
        started = time.perf_counter()

        def work(slot: int) -> None:
            totals[slot] = sender(client, ids, batch_size, deadline)

        workers = [threading.Thread(target=work, args=(slot,)) for slot in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
        stats = SandboxAdmin(url).stats()
    total = sum(totals)
    print(
        f"sandbox throughput: {total / elapsed:,.0f} messages/s "
        f"({total:,} messages in batches of {batch_size}, {threads} client threads, "
        f"{elapsed:.1f} s; sandbox peak {stats['peak_messages_per_second']:,} messages/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    run(args.seconds, args.batch, args.threads)


if __name__ == "__main__":
    main()
