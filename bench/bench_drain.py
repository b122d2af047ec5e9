"""Drain: a backlog of 100,000 messages in PostgreSQL sent to the sandbox (20 ms latency).

Real `outbox-celery -A worker worker` and `beat` processes drain a copy of one backlog, first
with 1 and 2 worker (pool) processes at default settings (batches start at 100 and grow to
500), then with fixed batches of 100 and of 500 and at default settings; each run prints
messages/s, peak worker memory and the CPU each part used. Database statements per batch are
counted in-process by the dispatcher itself. Beside the runs with batches of 100 and 500, a bare
relay (bench/relay.py: four asyncio loops, no lease, gate, screening or retries) drains another
copy of the backlog with the same batch size, and the outbox's rate is printed as a ratio to it.
Last, the naive approach (bench/naive_app.py: one Celery task and one API call per message) runs
on the same backlog, and the ratio is printed.

Run: .venv/bin/python bench/bench_drain.py [--messages 100000] [--latency-ms 20] [--quick]
[--naive-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

import naive_app
import psycopg
import relay
import support
from celery import Celery
from drained import DrainWatch
from sqlalchemy import Engine, event

from sandbox.testing import SandboxAdmin
from worker.database import make_engine
from worker.dispatch.dispatcher import Dispatcher
from worker.settings import Settings
from worker.wiraya.client import WirayaClient

TEMPLATE = "outbox_bench_backlog"
RUN = "outbox_bench_drain"
NAIVE_SECONDS = 20.0
HOLD = "bench: held until every process is ready"


@dataclass(frozen=True)
class Run:
    """One drain: its configuration and what it measured."""

    label: str
    processes: int
    batch: int
    messages: int
    seconds: float
    requests: int
    peak_mib: list[float]
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def micros(self, part: str) -> float:
        """CPU microseconds per message spent by ``part`` (worker, relay, postgres, ...)."""
        return 1e6 * self.cpu.get(part, 0.0) / self.messages

    def __str__(self) -> str:
        cpu = ", ".join(f"{name} {seconds:.1f}" for name, seconds in self.cpu.items())
        per_request = self.messages / max(self.requests, 1)
        memory = ""
        if self.peak_mib:
            peaks = " + ".join(f"{mib:.0f}" for mib in self.peak_mib)
            memory = (
                f"peak worker memory {max(self.peak_mib):.0f} MiB per process "
                f"({peaks} MiB: main + pool); "
            )
        return (
            f"{self.label}: {self.rate:,.0f} messages/s ({self.messages:,} in "
            f"{self.seconds:.1f} s, {self.requests:,} requests, {per_request:.0f} per request)\n"
            f"    {memory}CPU seconds: {cpu}"
        )


def build_backlog(messages: int, name: str = TEMPLATE) -> None:
    """The template database: ``messages`` due rows, as many producers would have left them."""
    url = support.create_database(name)
    with psycopg.connect(_dsn(url), autocommit=True) as connection:
        connection.execute(
            """
            INSERT INTO outbox_messages (client_message_id, recipient, content)
            SELECT 'drain-' || lpad(g::text, 7, '0'),
                   '4670' || lpad((1000000 + g %% 8000000)::text, 7, '0'),
                   jsonb_build_object('$type', 'SMSProject', 'projectId', 123,
                                      'placeholders', jsonb_build_array('John', 'Order #' || g))
            FROM generate_series(1, %s) AS g
            """,
            (messages,),
        )
        # Autovacuum analyzes a table this new within a minute; do it now, as it would.
        connection.execute("VACUUM ANALYZE outbox_messages")
        connection.execute(
            "INSERT INTO outbox_dispatch_gate (name, paused_until, reason) "
            "VALUES ('wiraya', now() + interval '1 day', %s)",
            (HOLD,),
        )


def release(url: str) -> None:
    """Open the gate held in the template and wake the dispatchers at once."""
    with psycopg.connect(_dsn(url), autocommit=True) as connection:
        connection.execute("UPDATE outbox_dispatch_gate SET paused_until = NULL, reason = NULL")
        connection.execute("NOTIFY outbox_messages")


def finished(url: str) -> int:
    with psycopg.connect(_dsn(url), autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM outbox_messages WHERE status IN ('accepted', 'failed')"
        ).fetchone()
    return int(row[0]) if row else 0


def drain(
    label: str,
    sandbox: support.Process,
    messages: int,
    processes: int | None = None,
    batch: int | None = None,
) -> Run:
    """Drain a fresh copy of the backlog with one worker of ``processes`` pool processes
    (None: the worker's default, one per OUTBOX_MAX_PARALLEL_DISPATCHES)."""
    admin = SandboxAdmin(sandbox.url)
    # A batch size given is fixed: no growth past it.
    settings = (
        {}
        if batch is None
        else {"OUTBOX_BATCH_SIZE": str(batch), "OUTBOX_BATCH_SIZE_MAX": str(batch)}
    )
    with ExitStack() as stack:
        url = stack.enter_context(support.scratch_database(RUN, template=TEMPLATE))
        redis = stack.enter_context(support.redis_server())
        env = support.outbox_env(url, redis.url, sandbox.url, **settings)
        worker = stack.enter_context(support.celery_worker(env, concurrency=processes))
        beat = stack.enter_context(support.celery_beat(env))
        admin.reset()
        cpu = support.CpuMeter(
            worker=worker.tree,
            beat=beat.tree,
            sandbox=sandbox.tree,
            redis=redis.tree,
            postgres=lambda: support.postgres_backends(RUN),
        )
        watch = DrainWatch(url, sandbox.url)
        release(url)
        started = time.monotonic()
        seconds = watch.wait(messages, timeout=900, what="the backlog to drain") - started
        used = cpu.used()
        peak = worker.peak_rss_mib()
    requests = int(admin.stats()["requests"])
    chosen = batch or Settings.model_fields["batch_size"].default
    pool = processes or Settings.model_fields["max_parallel"].default
    return Run(label, pool, chosen, messages, seconds, requests, peak, used)


def statements_per_batch(api: str, batches: int = 50) -> str:
    """Count what the dispatcher sends to PostgreSQL for ``batches`` batches, in-process."""
    with support.scratch_database(RUN, template=TEMPLATE) as url:
        with psycopg.connect(_dsn(url), autocommit=True) as connection:
            connection.execute("UPDATE outbox_dispatch_gate SET paused_until = NULL")
        settings = Settings.from_environ({}, OUTBOX_DATABASE_URL=url, WIRAYA_BASE_URL=api)
        engine = make_engine(url)
        kinds = _count_statements(engine)
        with WirayaClient.from_settings(settings) as client:
            dispatcher = Dispatcher(settings, engine, client)
            sent = sum(dispatcher.dispatch_once().claimed for _ in range(batches))
        engine.dispose()
    total = sum(kinds.values())
    detail = ", ".join(f"{kind} {count / batches:g}" for kind, count in kinds.most_common())
    return (
        f"database statements per batch of {sent // batches}: {total / batches:g} "
        f"({detail}); {total / sent:.3f} per message"
    )


def _count_statements(engine: Engine) -> Counter[str]:
    kinds: Counter[str] = Counter()

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        kinds[_kind(statement)] += 1

    event.listen(engine, "before_cursor_execute", count)
    ping = engine.dialect.do_ping

    def counted_ping(dbapi_connection: object) -> bool:
        kinds["pool pre-ping"] += 1
        return bool(ping(dbapi_connection))

    engine.dialect.do_ping = counted_ping  # type: ignore[method-assign]
    return kinds


def _kind(statement: str) -> str:
    text = " ".join(statement.split())
    if "SKIP LOCKED" in text:
        return "claim"
    if "UPDATE outbox_messages AS m" in text:
        return "record"
    if "outbox_dispatch_gate" in text:
        return "gate " + text.split()[0].lower()
    return text[:40]


def relay_drain(sandbox: support.Process, messages: int, *, batch: int) -> Run:
    """Drain a fresh copy of the backlog with the bare relay (bench/relay.py), in this process."""
    admin = SandboxAdmin(sandbox.url)
    with support.scratch_database(RUN, template=TEMPLATE) as url:
        admin.reset()
        accepted, seconds, used = asyncio.run(_timed_relay(_dsn(url), sandbox, batch))
    if accepted != messages:
        raise RuntimeError(f"the relay accepted {accepted:,} of {messages:,} messages")
    requests = int(admin.stats()["requests"])
    label = f"relay ({relay.LOOPS} loops), batches of {batch}"
    return Run(label, 1, batch, messages, seconds, requests, [], used)


async def _timed_relay(
    dsn: str, sandbox: support.Process, batch: int
) -> tuple[int, float, dict[str, float]]:
    """The relay's messages accepted, seconds and CPU, its connections open before and after."""
    connections = [await relay.connect(dsn) for _ in range(relay.LOOPS)]
    try:
        cpu = support.CpuMeter(
            relay=lambda: [os.getpid()],
            sandbox=sandbox.tree,
            postgres=lambda: support.postgres_backends(RUN),
        )
        started = time.monotonic()
        accepted = await relay.relay(connections, sandbox.url, batch)
        seconds = time.monotonic() - started
        return accepted, seconds, cpu.used()
    finally:
        for connection in connections:
            await connection.close()


def ratio(outbox: Run, reference: Run, target: float | None = None) -> str:
    """The relay's rate, the outbox's, the outbox's as a share of the relay's, and the CPU
    per message of each side's own process and of PostgreSQL."""
    aim = "" if target is None else f" (target >= {target:g})"
    return (
        f"{reference.label}: {reference.rate:,.0f} msg/s; outbox {outbox.label}: "
        f"{outbox.rate:,.0f} msg/s; ratio {outbox.rate / reference.rate:.2f}{aim}\n"
        f"    CPU per message: outbox worker {outbox.micros('worker'):.0f} µs, PostgreSQL "
        f"{outbox.micros('postgres'):.0f} µs; relay {reference.micros('relay'):.0f} µs, "
        f"PostgreSQL {reference.micros('postgres'):.0f} µs (target: PostgreSQL at most the relay's)"
    )


def naive_run(api: str, processes: int, seconds: float = NAIVE_SECONDS) -> Run:
    """The naive approach for ``seconds`` on the backlog, with ``processes`` pool processes."""
    admin = SandboxAdmin(api)
    with ExitStack() as stack:
        url = stack.enter_context(support.scratch_database(RUN, template=TEMPLATE))
        redis = stack.enter_context(support.redis_server())
        env = support.outbox_env(url, redis.url, api)
        app = "naive_app"
        worker = stack.enter_context(
            support.celery_worker(env, concurrency=processes, app=app, name="naive")
        )
        admin.reset()
        publisher = Celery(broker=redis.url)
        queued = min(8_000, 400 * int(seconds) + 200)  # more than it can send in the window
        cpu = support.CpuMeter(
            worker=worker.tree,
            redis=redis.tree,
            postgres=lambda: support.postgres_backends(RUN),
        )
        started = time.monotonic()
        for message_id in range(1, queued + 1):
            publisher.send_task(naive_app.TASK, args=[message_id], queue=naive_app.QUEUE)
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        done = finished(url)
        elapsed = time.monotonic() - started
        used = cpu.used()
        publisher.close()
    label = f"naive (one task and one API call per message, {processes} processes)"
    return Run(label, processes, 1, done, elapsed, done, [], used)


def naive(api: str, drained: Run, seconds: float = NAIVE_SECONDS) -> str:
    """The naive approach on the same backlog, with as many processes as ``drained``."""
    run = naive_run(api, drained.processes, seconds)
    return (
        f"{run.label}: {run.rate:,.0f} messages/s ({run.messages:,} in {run.seconds:.1f} s; "
        f"the {drained.messages:,} backlog would take {drained.messages / run.rate / 60:.0f} "
        f"min)\noutbox / naive: {drained.rate / run.rate:.0f}x ({drained.label}: "
        f"{drained.rate:,.0f} messages/s)"
    )


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument(
        "--naive-seconds", type=float, default=NAIVE_SECONDS, help="0: no naive run"
    )
    parser.add_argument(
        "--quick", action="store_true", help="only the relay and the outbox at batches of 500"
    )
    args = parser.parse_args()
    support.heading(
        f"drain: {args.messages:,} messages in PostgreSQL to the sandbox "
        f"({args.latency_ms:g} ms latency per request)"
    )
    print(support.load_average(), flush=True)
    build_backlog(args.messages)
    try:
        with support.sandbox("--latency-ms", str(args.latency_ms)) as sandbox:
            print(statements_per_batch(sandbox.url), flush=True)
            backlog = (sandbox, args.messages)
            # Each relay run next to the outbox run it is compared with, so both see one load.
            runs: list[Callable[[], Run]] = [
                lambda: drain("1 process (--concurrency 1), default settings", *backlog, 1, None),
                lambda: drain("2 processes (--concurrency 2), default settings", *backlog, 2, None),
                lambda: relay_drain(*backlog, batch=100),
                lambda: drain("4 processes, fixed batches of 100", *backlog, None, 100),
                lambda: relay_drain(*backlog, batch=500),
                lambda: drain(
                    "default settings (4 processes, batches 100 growing to 500)", *backlog
                ),
                lambda: drain("4 processes, fixed batches of 500", *backlog, None, 500),
            ]
            if args.quick:
                runs = runs[4:]
            results: list[Run] = []
            for run in runs:
                results.append(run())
                print(results[-1], flush=True)
            relay_500, default, large = results[-3:]
            if not args.quick:
                print(ratio(results[3], results[2]), flush=True)
            print(ratio(large, relay_500, 1.0), flush=True)
            print(ratio(default, relay_500, 0.8), flush=True)
            if args.naive_seconds > 0:
                print(naive(sandbox.url, default, args.naive_seconds), flush=True)
    finally:
        support.drop_database(TEMPLATE)
    print(f"(processes: celery pool processes of one worker; {os.cpu_count()} cores in all)")
    print(support.load_average(), flush=True)


if __name__ == "__main__":
    main()
