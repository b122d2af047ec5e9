"""Producer: rows/s that enqueue_many inserts, and enqueue one message per transaction.

Into a fresh, migrated PostgreSQL outbox: 100,000 messages given as mappings (validated, then
inserted with multi-row INSERTs) in calls of 1,000, each call its own transaction; the same
with NewMessage objects built beforehand (the insert alone); and enqueue() in a transaction
per message, as a web request would.

Run: .venv/bin/python bench/bench_producer.py [--messages 100000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import support
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from models import NewMessage, SMSProject, enqueue, enqueue_many
from worker.database import make_engine

DATABASE = "outbox_bench_producer"
CALL = 1_000
CONTENT = SMSProject(project_id=123, placeholders=["John", "Order #5678"])


def mappings(prefix: str, count: int) -> list[dict[str, object]]:
    return [
        {
            "client_message_id": f"{prefix}-{n}",
            "recipient": "+46 70-123 45 67",
            "content": CONTENT,
        }
        for n in range(count)
    ]


def in_calls(engine: Engine, items: list[object]) -> None:
    for start in range(0, len(items), CALL):
        with Session(engine) as session, session.begin():
            enqueue_many(session, items[start : start + CALL])  # type: ignore[arg-type]


def one_per_transaction(engine: Engine, items: list[dict[str, object]]) -> None:
    for item in items:
        with Session(engine) as session, session.begin():
            enqueue(session, **item)  # type: ignore[arg-type]


def rate(label: str, count: int, work: Callable[[], None]) -> None:
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    print(f"{label}: {count / seconds:,.0f} rows/s ({count:,} rows in {seconds:.1f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    count = args.messages
    support.heading(f"producer: {count:,} messages into a PostgreSQL outbox")
    with support.scratch_database(DATABASE) as url:
        engine = make_engine(url)
        given = mappings("map", count)
        rate(
            f"enqueue_many, mappings validated and inserted, {CALL:,} per call",
            count,
            lambda: in_calls(engine, given),  # type: ignore[arg-type]
        )
        built = [NewMessage.create(**item) for item in mappings("new", count)]  # type: ignore[arg-type]
        rate(
            f"enqueue_many, NewMessage objects built beforehand, {CALL:,} per call",
            count,
            lambda: in_calls(engine, built),  # type: ignore[arg-type]
        )
        single = mappings("one", min(count, 5_000))
        rate(
            "enqueue, one message per transaction",
            len(single),
            lambda: one_per_transaction(engine, single),
        )
        engine.dispose()


if __name__ == "__main__":
    main()
