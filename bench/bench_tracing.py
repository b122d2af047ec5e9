"""Tracing's cost per batch: the dispatcher's CPU and wall time per 100-message batch, tracing off
and on.

Every message is enqueued inside a span, so each carries a trace context (100 span links per
batch). The dispatcher runs in this process against the in-process sandbox and a fresh PostgreSQL
outbox, draining the same backlog twice: once with tracing off (the worker's decision forced off,
as when no OTEL_* variable is set), once on, with the SDK's batching processor exporting over
OTLP/HTTP to a real receiver on localhost (tests/otlp.py). Best of the rounds, per batch.

Run: .venv/bin/python bench/bench_tracing.py [--messages 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import support
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy import text
from sqlalchemy.orm import Session

from models import NewMessage, SMSProject, enqueue_many
from sandbox.testing import running_sandbox

sys.path.insert(0, str(support.ROOT))  # the tests' OTLP receiver
from tests.otlp import otlp_receiver
from worker import tracing
from worker.database import make_engine
from worker.dispatch.dispatcher import Dispatcher
from worker.settings import Settings
from worker.wiraya.client import WirayaClient

BATCH = 100


def fill(engine: object, count: int, tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("producer"):
        messages = [
            NewMessage.create(
                recipient=f"4670{1_000_000 + n:07d}",
                content=SMSProject(project_id=123, placeholders=["Ada", f"Order #{n}"]),
            )
            for n in range(count)
        ]
    with Session(engine) as session, session.begin():  # type: ignore[call-overload]
        enqueue_many(session, messages)


def drain(dispatcher: Dispatcher) -> tuple[int, float, float, float]:
    """Batches sent, and the seconds they took until nothing was due: the dispatching thread's
    CPU, the whole process's CPU (the exporter's thread, and the receiver's here), wall."""
    batches = 0
    thread, process, wall = time.thread_time(), time.process_time(), time.perf_counter()
    while dispatcher.dispatch_once().batches:
        batches += 1
    return (
        batches,
        time.thread_time() - thread,
        time.process_time() - process,
        time.perf_counter() - wall,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    support.heading("Tracing: cost per batch of 100 messages (100 links each)")
    with otlp_receiver() as (endpoint, received):
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(f"{endpoint}/v1/traces")))
        trace.set_tracer_provider(provider)
        tracer = provider.get_tracer("bench")
        with support.scratch_database("outbox_bench_tracing") as url, running_sandbox() as api:
            engine = make_engine(url)
            settings = Settings.from_environ(
                {},
                OUTBOX_DATABASE_URL=url,
                WIRAYA_BASE_URL=api.url,
                OUTBOX_BATCH_SIZE=str(BATCH),
                OUTBOX_BATCH_SIZE_MAX=str(BATCH),
            )
            figures: dict[str, list[tuple[float, float, float]]] = {"off": [], "on": []}
            with WirayaClient.from_settings(settings) as client:
                dispatcher = Dispatcher(settings, engine, client, rng=random.Random(1))
                for _ in range(args.rounds):
                    for mode in ("off", "on"):
                        with engine.begin() as connection:
                            connection.execute(text("DELETE FROM outbox_messages"))
                        fill(engine, args.messages, tracer)
                        tracing._decided.clear()
                        if mode == "off":
                            tracing._decided[tracing.NAME] = None
                        batches, *seconds = drain(dispatcher)
                        figures[mode].append(tuple(each / batches for each in seconds))
            provider.force_flush()
        print(f"spans received by the OTLP receiver: {len(received.spans):,}")
    best = {
        mode: [min(r[i] for r in rounds) * 1000 for i in range(3)]
        for mode, rounds in figures.items()
    }
    for mode, (thread, process, wall) in best.items():
        print(
            f"tracing {mode:>3}: {thread:6.2f} ms CPU in the dispatching thread, {process:6.2f} ms "
            f"in the process, {wall:6.2f} ms wall per batch (best of {args.rounds})"
        )
    extra = [on - off for on, off in zip(best["on"], best["off"], strict=True)]
    print(
        f"cost of tracing per batch: {extra[0]:+.2f} ms CPU in the dispatching thread, "
        f"{extra[1]:+.2f} ms in the process (export included), {extra[2]:+.2f} ms wall"
    )


if __name__ == "__main__":
    main()
