"""Latency: 100 messages/s committed one per transaction for 30 s; commit to accepted, p50/p99/max.

Each message is enqueued through the producer API in a transaction of its own; the time its
commit returned is noted, and its latency runs to the accepted_at the worker recorded. The
figures are the steady state of a running outbox: the same rate for a warm-up of 2 s goes
first, unmeasured but for its first message, which meets the fresh worker (each pool process's
first database and HTTP connections) and is printed on its own. Real
`celery -A worker worker` (its default pool: 4 processes on PostgreSQL, 1 on SQLite) and `beat`
processes, the sandbox answering after 20 ms. Three modes: polling alone (OUTBOX_NOTIFY=off,
every OUTBOX_POLL_INTERVAL_SECONDS=1), the default on PostgreSQL (beat LISTENs for the insert
trigger's NOTIFY and queues a dispatch at once) and the default on SQLite (beat reads the
newest row id every 50 ms).

Run: .venv/bin/python bench/bench_latency.py [--rate 100] [--seconds 30]"""

from __future__ import annotations

import argparse
import time
from contextlib import ExitStack
from datetime import UTC, datetime

import support
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from models import OutboxMessage, SMSProject, Status, enqueue
from worker.database import make_engine

DATABASE = "outbox_bench_latency"
# The warm-up at the measured rate: every pool process has run dispatches by its end (the first
# messages after start wait for new connections, and at 100 msg/s they are the p99 otherwise).
WARM_UP_SECONDS = 2.0
MODES = {
    # label: (database, settings); no OUTBOX_NOTIFY at all is "auto": on.
    "PostgreSQL, poll only (OUTBOX_NOTIFY=off, OUTBOX_POLL_INTERVAL_SECONDS=1)": (
        "postgresql",
        {"OUTBOX_NOTIFY": "off"},
    ),
    "PostgreSQL, default (LISTEN/NOTIFY)": ("postgresql", {}),
    "SQLite, default (newest id read every 50 ms)": ("sqlite", {}),
}


def produce(url: str, prefix: str, rate: float, seconds: float) -> dict[str, datetime]:
    """Commit ``rate`` messages a second, one per transaction; when each commit returned."""
    engine = make_engine(url)
    content = SMSProject(project_id=123, placeholders=["John", "Order #5678"])
    committed: dict[str, datetime] = {}
    started = time.monotonic()
    for number in range(int(rate * seconds)):
        delay = started + number / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        cmid = f"{prefix}-{number:06d}"
        with Session(engine) as session, session.begin():
            enqueue(session, recipient="46701234567", content=content, client_message_id=cmid)
        committed[cmid] = datetime.now(UTC)
    engine.dispose()
    return committed


def accepted_at(url: str, prefix: str, expected: int) -> dict[str, datetime]:
    """Wait until all ``expected`` messages are accepted; their accepted_at."""
    engine = make_engine(url)
    # Through the model's columns: SQLite returns the times as text otherwise.
    query = select(OutboxMessage.client_message_id, OutboxMessage.accepted_at).where(
        OutboxMessage.status == Status.ACCEPTED,
        OutboxMessage.client_message_id.like(bindparam("prefix")),
    )
    rows: dict[str, datetime] = {}

    def all_accepted() -> bool:
        with engine.connect() as connection:
            for cmid, at in connection.execute(query, {"prefix": f"{prefix}-%"}):
                rows[cmid] = at
        return len(rows) >= expected

    support.wait_for(all_accepted, timeout=120, what="every message to be accepted")
    engine.dispose()
    return rows


def measure(
    label: str, database: str, settings: dict[str, str], rate: float, seconds: float
) -> str:
    with ExitStack() as stack:
        if database == "sqlite":
            url = stack.enter_context(support.scratch_sqlite())
        else:
            url = stack.enter_context(support.scratch_database(DATABASE))
        redis = stack.enter_context(support.redis_server())
        sandbox = stack.enter_context(support.sandbox("--latency-ms", "20"))
        env = support.outbox_env(url, redis.url, sandbox.url, **settings)
        stack.enter_context(support.celery_worker(env, concurrency=None))  # the default pool
        stack.enter_context(support.celery_beat(env))
        time.sleep(2)  # beat's first ticks and LISTEN are in place, as in a running system
        warm_up = produce(url, "warm-up", rate, WARM_UP_SECONDS)
        first = latencies(warm_up, accepted_at(url, "warm-up", len(warm_up)))[0]
        committed = produce(url, "latency", rate, seconds)
        measured = latencies(committed, accepted_at(url, "latency", len(committed)))
    p50, p99 = support.percentile(measured, 0.50), support.percentile(measured, 0.99)
    return (
        f"{label}: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(measured):.0f} ms "
        f"({len(measured):,} messages, commit to accepted, after a {WARM_UP_SECONDS:g} s "
        f"warm-up; its first message, the fresh worker's: {first:.0f} ms)"
    )


def latencies(committed: dict[str, datetime], accepted: dict[str, datetime]) -> list[float]:
    """Commit to accepted in milliseconds, in the order the messages were committed."""
    return [(accepted[cmid] - at).total_seconds() * 1000 for cmid, at in committed.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    support.heading(
        f"latency: {args.rate:g} messages/s, one per transaction, for {args.seconds:g} s "
        "(sandbox latency 20 ms, 1 worker with its default pool)"
    )
    for label, (database, settings) in MODES.items():
        print(measure(label, database, settings, args.rate, args.seconds), flush=True)


if __name__ == "__main__":
    main()
