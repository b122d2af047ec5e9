"""Peers: the outbox beside other ways to drain one backlog, in one run against one sandbox.

The same backlog (default 100,000 messages, as bench_drain.py builds it) drained by: the
outbox at default settings (`outbox-celery -A worker worker`, its pool of four, beat
beside it); bench/relay.py (four asyncio loops, batches of 500, no guarantee); a pgqueuer
consumer (bench/peers/pgqueuer_consumer.py: four loops, batched dequeue of 500, one API call
per batch, every job logged done in one statement); and naive Celery (bench/naive_app.py: a
task and an API call per message, four processes, measured over a window). Prints one table:
messages per second, and CPU microseconds per message of the drain's own processes and of
PostgreSQL, with the machine and its load.

Run: .venv/bin/python bench/bench_peers.py [--messages 100000] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import bench_drain
import support
from bench_drain import Run
from peers import pgqueuer_consumer

from sandbox.testing import SandboxAdmin

PGQUEUER_DATABASE = "outbox_bench_pgqueuer"
BATCH = 500


def pgqueuer_drain(sandbox: support.Process, messages: int) -> Run:
    """The pgqueuer consumer on a queue of ``messages`` jobs, in this process."""
    with support.scratch_database(PGQUEUER_DATABASE) as url:
        dsn = bench_drain._dsn(url)
        asyncio.run(pgqueuer_consumer.install(dsn))
        asyncio.run(pgqueuer_consumer.enqueue_backlog(dsn, messages))
        SandboxAdmin(sandbox.url).reset()
        done, seconds, used = asyncio.run(_timed_pgqueuer(dsn, sandbox))
    if done != messages:
        raise RuntimeError(f"the pgqueuer consumer finished {done:,} of {messages:,} jobs")
    requests = int(SandboxAdmin(sandbox.url).stats()["requests"])
    label = f"pgqueuer ({pgqueuer_consumer.LOOPS} loops, batches of {BATCH})"
    return Run(label, 1, BATCH, messages, seconds, requests, [], used)


async def _timed_pgqueuer(
    dsn: str, sandbox: support.Process
) -> tuple[int, float, dict[str, float]]:
    """Jobs done, seconds and CPU; the connections open before the meter starts, so that
    their server processes are counted."""
    connections = [await pgqueuer_consumer.connect(dsn) for _ in range(pgqueuer_consumer.LOOPS)]
    try:
        cpu = support.CpuMeter(
            consumer=lambda: [os.getpid()],
            sandbox=sandbox.tree,
            postgres=lambda: support.postgres_backends(PGQUEUER_DATABASE),
        )
        started = time.monotonic()
        done = await pgqueuer_consumer.drain(connections, sandbox.url, BATCH)
        return done, time.monotonic() - started, cpu.used()
    finally:
        for connection in connections:
            await connection.close()


def table(rows: list[tuple[Run, str]]) -> str:
    """Markdown: each drain's rate and CPU per message (its own processes, PostgreSQL)."""
    lines = [
        "| drain | messages/s | CPU µs per message: its processes | PostgreSQL | both |",
        "|---|---|---|---|---|",
    ]
    for run, own in rows:
        mine, database = run.micros(own), run.micros("postgres")
        lines.append(
            f"| {run.label} | {run.rate:,.0f} | {mine:.0f} | {database:.0f} | "
            f"{mine + database:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--naive-seconds", type=float, default=bench_drain.NAIVE_SECONDS)
    args = parser.parse_args()
    support.heading(
        f"peers: {args.messages:,} messages drained to the sandbox "
        f"({args.latency_ms:g} ms latency per request)"
    )
    print(support.load_average(), flush=True)
    bench_drain.build_backlog(args.messages)
    try:
        with support.sandbox("--latency-ms", str(args.latency_ms)) as sandbox:
            backlog = (sandbox, args.messages)
            rows = [
                (bench_drain.drain("outbox, default settings", *backlog), "worker"),
                (bench_drain.relay_drain(*backlog, batch=BATCH), "relay"),
                (pgqueuer_drain(*backlog), "consumer"),
                (bench_drain.naive_run(sandbox.url, 4, args.naive_seconds), "worker"),
            ]
            for run, _ in rows:
                print(run, flush=True)
    finally:
        support.drop_database(bench_drain.TEMPLATE)
    print(table(rows))
    print(
        "(CPU of the drain's own processes: the outbox's worker, the relay's and the pgqueuer "
        "consumer's Python process, naive Celery's worker; beat, Redis and the sandbox apart)"
    )
    print(support.load_average(), flush=True)


if __name__ == "__main__":
    main()
