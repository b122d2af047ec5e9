"""Bloat: a drain of a fresh backlog, then of as many messages again while a snapshot is held open.

A long reader (an analytics query, a `psql` session left in a transaction, a replica with
`hot_standby_feedback`) keeps vacuum from removing any row version that died after its
snapshot was taken: every claim and record of the second drain leaves dead versions behind in
the table and its indexes, and later claims walk past them. Both drains run the default worker
(`outbox-celery -A worker worker`, beat beside it) on one database against the sandbox; the
first on a fresh backlog, the second on a new backlog of the same size inserted (and the table
vacuumed) after the first drained, with a REPEATABLE READ transaction that read the table held
open from before it starts until it ends. Prints both rates, their ratio (target at least
0.8), the dead row versions left in the table and the size of the claim's index of due rows.
Last, in this process and so less at the mercy of the machine's load: the claims alone of up
to 50,000 rows under a held snapshot, each from the head of its lane and past the lanes'
floors (worker/dispatch/floors.py).

Run: .venv/bin/python bench/bench_bloat.py [--messages 100000] [--latency-ms 20]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import bench_drain
import psycopg
import support
from drained import DrainWatch
from sqlalchemy import text

from sandbox.testing import SandboxAdmin
from worker.database import make_engine
from worker.dispatch import claim as claims
from worker.dispatch.floors import LaneFloors

RUN = "outbox_bench_bloat"
TARGET = 0.8
BATCH = 500
CLAIMS_ALONE = 50_000  # rows the claims-alone comparison drains, at most
# What the record does to the claimed rows, as far as the next claim can tell.
ACCEPT = text(
    "UPDATE outbox_messages SET status = 'accepted', tracking_id = 'bench', "
    "locked_until = NULL, claim_token = NULL WHERE id = ANY(:ids)"
)


def add_backlog(url: str, messages: int, first: int) -> None:
    """``messages`` more due rows, numbered from ``first``, analyzed as autovacuum would."""
    with psycopg.connect(bench_drain._dsn(url), autocommit=True) as connection:
        connection.execute(
            """
            INSERT INTO outbox_messages (client_message_id, recipient, content)
            SELECT 'bloat-' || lpad(g::text, 8, '0'),
                   '4670' || lpad((1000000 + g %% 8000000)::text, 7, '0'),
                   jsonb_build_object('$type', 'SMSProject', 'projectId', 123,
                                      'placeholders', jsonb_build_array('John', 'Order #' || g))
            FROM generate_series(%s::bigint, %s::bigint) AS g
            """,
            (first, first + messages - 1),
        )
        # Vacuumed, so that the second drain starts as clean as the first, but for the held
        # snapshot and the finished rows of the first.
        connection.execute("VACUUM ANALYZE outbox_messages")


def hold_gate(url: str) -> None:
    with psycopg.connect(bench_drain._dsn(url), autocommit=True) as connection:
        connection.execute(
            "INSERT INTO outbox_dispatch_gate (name, paused_until, reason) "
            "VALUES ('wiraya', now() + interval '1 day', %s) ON CONFLICT (name) DO UPDATE "
            "SET paused_until = excluded.paused_until, reason = excluded.reason",
            (bench_drain.HOLD,),
        )


@contextmanager
def snapshot_held(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A REPEATABLE READ transaction that has read the table, open for the block."""
    with psycopg.connect(bench_drain._dsn(url)) as reader:
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT count(*) FROM outbox_messages").fetchone()
        try:
            yield reader
        finally:
            reader.rollback()


def dead_versions(url: str) -> str:
    """Dead row versions in the table, and the size of the claim's index of due rows."""
    with psycopg.connect(bench_drain._dsn(url), autocommit=True) as connection:
        row = connection.execute(
            "SELECT n_dead_tup, pg_relation_size('ix_outbox_messages_due') / 8192 "
            "FROM pg_stat_user_tables WHERE relname = 'outbox_messages'"
        ).fetchone()
    if row is None:
        return "dead row versions: ?"
    return f"{row[0]:,} dead row versions in the table, index of due rows {row[1]:,} pages"


def lane_walk(url: str) -> str:
    """What finding the first due row of the normal lane reads now (none is due: the walk
    through entries of rows claimed since the last vacuum is all there is)."""
    with psycopg.connect(bench_drain._dsn(url), autocommit=True) as connection:
        plan = connection.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT id FROM outbox_messages "
            "WHERE status = 'pending' AND priority = 1 AND next_attempt_at <= now() "
            "ORDER BY next_attempt_at, id LIMIT 1"
        ).fetchone()
    top = plan[0][0] if plan else {}
    buffers = top.get("Plan", {}).get("Shared Hit Blocks", 0) + top.get("Plan", {}).get(
        "Shared Read Blocks", 0
    )
    return f"finding no due row reads {buffers:,} buffers in {top.get('Execution Time', 0):.1f} ms"


def claims_alone(messages: int, floored: bool) -> float:
    """Seconds the claims of ``messages`` rows take, in batches of 500 each marked accepted at
    once, while a snapshot is held: past each lane's floor, or each from the head of its lane."""
    with support.scratch_database(RUN + "_claims") as url:
        add_backlog(url, messages, 1)
        hold_gate(url)
        engine = make_engine(url).execution_options(isolation_level="AUTOCOMMIT")
        floors, spent = LaneFloors(), 0.0
        with snapshot_held(url), engine.connect() as connection:
            version = int(connection.scalar(text("SELECT version FROM outbox_dispatch_gate")))
            while True:
                started = time.perf_counter()
                rows = claims.claim(
                    connection,
                    limit=BATCH,
                    lease=timedelta(minutes=2),
                    now=datetime.now(UTC),
                    version=version,
                    token=claims.new_token(),
                    floors=floors if floored else LaneFloors(),
                )
                spent += time.perf_counter() - started
                if not rows:
                    break
                connection.execute(ACCEPT, {"ids": [row.id for row in rows]})
        engine.dispose()
    return spent


def drain_here(url: str, sandbox: support.Process, messages: int) -> float:
    """Messages per second of one default worker draining ``messages`` due rows of ``url``."""
    with ExitStack() as stack:
        redis = stack.enter_context(support.redis_server())
        env = support.outbox_env(url, redis.url, sandbox.url)
        stack.enter_context(support.celery_worker(env, concurrency=None))
        stack.enter_context(support.celery_beat(env))
        watch = DrainWatch(url, sandbox.url)
        bench_drain.release(url)
        started = time.monotonic()
        ended = watch.wait(messages, timeout=900, what="the backlog to drain")
        return messages / (ended - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    n = args.messages
    support.heading(
        f"bloat: {n:,} messages drained fresh, then {n:,} more with a snapshot held open "
        f"(sandbox latency {args.latency_ms:g} ms, default settings)"
    )
    print(support.load_average(), flush=True)
    with (
        support.scratch_database(RUN) as url,
        support.sandbox("--latency-ms", str(args.latency_ms)) as sandbox,
    ):
        SandboxAdmin(sandbox.url).reset()
        add_backlog(url, n, 1)
        hold_gate(url)
        fresh = drain_here(url, sandbox, n)
        print(f"fresh backlog: {fresh:,.0f} messages/s ({dead_versions(url)})", flush=True)
        print(f"    then {lane_walk(url)}", flush=True)
        hold_gate(url)
        add_backlog(url, n, n + 1)
        with snapshot_held(url):
            held = drain_here(url, sandbox, n)
            left, walk = dead_versions(url), lane_walk(url)
        print(f"with a snapshot held open: {held:,.0f} messages/s ({left})", flush=True)
        print(f"    then, the snapshot still held, {walk}", flush=True)
        print(f"ratio {held / fresh:.2f} (target >= {TARGET:g})", flush=True)
    alone = min(n, CLAIMS_ALONE)
    head, floored = claims_alone(alone, floored=False), claims_alone(alone, floored=True)
    print(
        f"the claims alone, {alone:,} rows in batches of {BATCH} with a snapshot held, in "
        f"this process: each from the head of its lane {head:.2f} s "
        f"({1e6 * head / alone:.0f} µs per row), past the lanes' floors {floored:.2f} s "
        f"({1e6 * floored / alone:.0f} µs per row)",
        flush=True,
    )
    print(support.load_average(), flush=True)


if __name__ == "__main__":
    main()
