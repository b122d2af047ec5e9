"""Scale: the claim query's cost as finished rows pile up, from 10 thousand to 10 million.

A dedicated database holds 1,000 due messages and a growing history of accepted ones (made by
INSERT ... SELECT generate_series, analyzed as autovacuum would). At each size the real claim
statement (worker.dispatch.claim.claim, a batch of 100) and the tick's count_due run 30 times in
transactions that are rolled back; the median time is printed with EXPLAIN ANALYZE's figures
and the indexes the plan reads. The claim must cost the same at every size: it reads the
partial indexes of due and leased rows, never the history.

Run: .venv/bin/python bench/bench_scale.py [--history 10000000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import support
from sqlalchemy import Connection, Engine, event, text

from worker.database import make_engine
from worker.dispatch import claim as claims

DATABASE = "outbox_bench_scale"
DUE = 1_000
BATCH = 100
REPEATS = 30
CONTENT = '{"$type": "SMSProject", "projectId": 123, "placeholders": ["John", "Order #5678"]}'


def add_rows(url: str, *, first: int, last: int, status: str) -> None:
    """Rows numbered first..last: accepted history, or due pending messages."""
    finished = status == "accepted"
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute(
            f"""
            INSERT INTO outbox_messages (client_message_id, recipient, content, status,
                attempts, tracking_id, accepted_at, created_at, updated_at, next_attempt_at)
            SELECT '{status}-' || g, '46701234567', %s::jsonb, %s, %s,
                   CASE WHEN %s THEN md5(g::text) END, CASE WHEN %s THEN now() END,
                   now() - interval '1 day', now(), now() - interval '1 minute'
            FROM generate_series(%s::bigint, %s::bigint) AS g
            """,  # type: ignore[arg-type]
            (CONTENT, status, int(finished), finished, finished, first, last),
        )
        connection.execute("ANALYZE outbox_messages")


def timed(engine: Engine, work: Callable[[Connection], object]) -> float:
    """The median milliseconds of ``work`` over REPEATS transactions, each rolled back."""
    samples = []
    for _ in range(REPEATS):
        with engine.connect() as connection:
            transaction = connection.begin()
            started = time.perf_counter()
            work(connection)
            samples.append((time.perf_counter() - started) * 1000)
            transaction.rollback()
    return statistics.median(samples)


def gate_version(connection: Connection) -> int:
    """The gate's version, which the claim is guarded by (its row made if none is there)."""
    connection.execute(
        text("INSERT INTO outbox_dispatch_gate (name) VALUES ('wiraya') ON CONFLICT DO NOTHING")
    )
    return int(connection.scalar(text("SELECT version FROM outbox_dispatch_gate")) or 0)


def claim(connection: Connection) -> object:
    now, version, token = datetime.now(UTC), gate_version(connection), claims.new_token()
    lease = timedelta(seconds=120)
    rows = claims.claim(connection, limit=BATCH, lease=lease, now=now, version=version, token=token)
    assert len(rows) == BATCH, "the due rows must be there to claim"
    return rows


def count_due(connection: Connection) -> object:
    return claims.count_due(connection, now=datetime.now(UTC), cap=BATCH * 4)


def explain(engine: Engine, work: Callable[[Connection], object], marker: str) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement ``work`` sends that contains ``marker``."""
    captured: list[tuple[str, Any]] = []

    def capture(_c: object, _cur: object, statement: str, parameters: Any, *_: object) -> None:
        if marker in statement:
            captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        with engine.connect() as connection:
            transaction = connection.begin()
            work(connection)
            transaction.rollback()
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    statement, parameters = captured[0]
    with engine.connect() as connection:
        transaction = connection.begin()
        sql = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement
        (plan,) = connection.exec_driver_sql(sql, parameters).one()
        transaction.rollback()
    top = (plan if isinstance(plan, list) else json.loads(plan))[0]
    nodes = list(_nodes(top["Plan"]))
    return {
        "ms": top["Execution Time"],
        "buffers": sum(
            n.get("Shared Hit Blocks", 0) + n.get("Shared Read Blocks", 0) for n in nodes[:1]
        ),
        "indexes": sorted({n["Index Name"] for n in nodes if "Index Name" in n}),
        "seq_scan": any(n["Node Type"] == "Seq Scan" for n in nodes),
    }


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def measure(engine: Engine, history: int) -> dict[str, Any]:
    plan = explain(engine, claim, "SKIP LOCKED")
    return {
        "history": history,
        "claim_ms": timed(engine, claim),
        "count_due_ms": timed(engine, count_due),
        **plan,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=10_000_000, help="finished rows at most")
    args = parser.parse_args()
    sizes = [size for size in (10_000, 100_000, 1_000_000, 10_000_000) if size < args.history]
    sizes.append(args.history)
    support.heading(
        f"scale: claiming {BATCH} of {DUE:,} due rows beside 10k to {args.history:,} finished ones"
    )
    results = []
    with support.scratch_database(DATABASE) as url:
        add_rows(url, first=1, last=DUE, status="pending")
        engine = make_engine(url)
        made = 0
        for size in sizes:
            started = time.monotonic()
            add_rows(url, first=made + 1, last=size, status="accepted")
            made = size
            result = measure(engine, size)
            results.append(result)
            print(
                f"{size:>12,} finished rows: claim {result['claim_ms']:.2f} ms median "
                f"(EXPLAIN ANALYZE {result['ms']:.2f} ms, {result['buffers']} buffers), "
                f"count_due {result['count_due_ms']:.2f} ms; plan reads "
                f"{', '.join(result['indexes'])}"
                f"{'; SEQ SCAN' if result['seq_scan'] else ''} "
                f"[rows made in {time.monotonic() - started:.0f} s]",
                flush=True,
            )
        engine.dispose()
    first, last = results[0], results[-1]
    uses_partial = all("ix_outbox_messages_due" in r["indexes"] for r in results)
    # A small table may be scanned whole (the planner's cheapest choice there); a large
    # one must not be: the claim would then read the history.
    print(
        f"claim at {last['history']:,} vs {first['history']:,} finished rows: "
        f"{last['claim_ms'] / first['claim_ms']:.2f}x the time, "
        f"{last['buffers']} vs {first['buffers']} buffers (the UPDATE writes into B-trees "
        f"one level deeper); due rows found through ix_outbox_messages_due at every size: "
        f"{uses_partial}; sequential scan at {last['history']:,}: {last['seq_scan']}"
    )


if __name__ == "__main__":
    main()
