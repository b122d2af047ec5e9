"""Lanes: urgent messages beside a bulk backlog; their latency, and what they cost the bulk drain.

A backlog of bulk messages (priority 2, 300,000 by default) drains through a real worker (its
default pool) and beat, the sandbox answering after 20 ms. Twice: alone, and with urgent
messages (priority 0) committed one per transaction at 10/s while it drains. Printed: the
urgent messages' commit-to-accepted p50/p99/max, and the bulk drain rate in both runs.

Run: .venv/bin/python bench/bench_lanes.py [--bulk 300000] [--urgent-rate 10]"""

from __future__ import annotations

import argparse
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime

import support
from drained import DrainWatch
from sqlalchemy import text
from sqlalchemy.orm import Session

from models import Priority, SMSFromAlpha, enqueue
from worker.database import make_engine

DATABASE = "outbox_bench_lanes"
BULK = """
INSERT INTO outbox_messages (client_message_id, recipient, content, priority)
SELECT 'bulk-' || n, '4670' || (1000000 + n % 8000000)::text,
       '{"$type": "SMSProject", "projectId": 7, "placeholders": ["Spring sale"]}'::jsonb, 2
FROM generate_series(1, :count) AS n
"""


def count(url: str, where: str) -> int:
    engine = make_engine(url)
    with engine.connect() as connection:
        value = connection.scalar(text(f"SELECT count(*) FROM outbox_messages WHERE {where}"))
    engine.dispose()
    return int(value or 0)


def urgent_trickle(url: str, rate: float, stop: threading.Event) -> dict[str, datetime]:
    """Commit urgent codes at ``rate`` per second until ``stop``; when each commit returned."""
    engine = make_engine(url)
    committed: dict[str, datetime] = {}
    started, number = time.monotonic(), 0
    while not stop.is_set():
        delay = started + number / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        cmid = f"code-{number:06d}"
        with Session(engine) as session, session.begin():
            enqueue(
                session,
                recipient="46701234567",
                content=SMSFromAlpha(sender="Wiraya", text=f"Your code is {number:06d}"),
                client_message_id=cmid,
                priority=Priority.URGENT,
            )
        committed[cmid] = datetime.now(UTC)
        number += 1
    engine.dispose()
    return committed


def latencies(url: str, committed: dict[str, datetime]) -> list[float]:
    engine = make_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT client_message_id, accepted_at FROM outbox_messages "
                "WHERE priority = 0 AND status = 'accepted'"
            )
        ).all()
    engine.dispose()
    accepted = dict(rows)
    return [(accepted[cmid] - at).total_seconds() * 1000 for cmid, at in committed.items()]


def drain(bulk: int, urgent_rate: float | None) -> tuple[float, list[float]]:
    """The bulk drain rate (messages/s), and the urgent latencies when there is a trickle."""
    with ExitStack() as stack:
        url = stack.enter_context(support.scratch_database(DATABASE))
        redis = stack.enter_context(support.redis_server())
        api = stack.enter_context(support.sandbox("--latency-ms", "20"))
        engine = make_engine(url)
        with engine.begin() as connection:
            connection.execute(text(BULK), {"count": bulk})
        engine.dispose()
        env = support.outbox_env(url, redis.url, api.url)
        stack.enter_context(support.celery_worker(env, concurrency=None))
        watch = DrainWatch(url, api.url, where="priority = 2")
        started = time.monotonic()
        stack.enter_context(support.celery_beat(env))
        stop, results = threading.Event(), {}
        trickle = None
        if urgent_rate:
            trickle = threading.Thread(
                target=lambda: results.update(urgent_trickle(url, urgent_rate, stop))
            )
            trickle.start()
        # The sandbox's count includes the urgent codes: the rows say when the bulk is done.
        ended = watch.wait(bulk, timeout=1_800, what="the bulk backlog to drain")
        seconds = ended - started
        stop.set()
        if trickle is not None:
            trickle.join()
            support.wait_for(
                lambda: count(url, "priority = 0 AND status <> 'accepted'") == 0,
                timeout=60,
                what="the last urgent messages",
            )
        return bulk / seconds, latencies(url, results) if urgent_rate else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bulk", type=int, default=300_000)
    parser.add_argument("--urgent-rate", type=float, default=10.0)
    args = parser.parse_args()
    support.heading(
        f"lanes: {args.bulk:,} bulk messages, urgent ones at {args.urgent_rate:g}/s "
        "(sandbox latency 20 ms, 1 worker with its default pool)"
    )
    alone, _ = drain(args.bulk, None)
    beside, urgent = drain(args.bulk, args.urgent_rate)
    p50, p99 = support.percentile(urgent, 0.5), support.percentile(urgent, 0.99)
    print(
        f"urgent, commit to accepted, beside the bulk drain: p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
        f"max {max(urgent):.0f} ms ({len(urgent):,} messages)"
    )
    print(
        f"bulk drain: {alone:,.0f} messages/s alone, {beside:,.0f} messages/s beside the urgent "
        f"trickle ({beside / alone:.0%})"
    )


if __name__ == "__main__":
    main()
