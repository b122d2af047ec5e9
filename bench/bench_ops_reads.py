"""Operator reads at scale: one metrics scrape and `outbox stats` beside 10 million finished rows.

A dedicated PostgreSQL database gets a history of finished rows (accepted, with some failed and
cancelled; INSERT ... SELECT generate_series, then VACUUM ANALYZE as autovacuum would) and a
backlog of 10,000 pending rows over the three lanes (a tenth scheduled for later) with 200
sending. Then, 30 times each, the median and the slowest:

- one scrape of the metrics endpoint's registry (the database snapshot and the Redis counters,
  rendered as Prometheus text), in-process as `outbox metrics` serves it;
- `outbox stats` and `outbox stats --json`, the whole command in-process (engine, checks,
  snapshot, printing), and once as a process, interpreter start included;
- the snapshot alone, with a backlog of 10,000 and again of 100,000 pending rows: what it costs
  grows with the backlog, not with the history;
- for comparison, the full GROUP BY over every status that a scrape used to run;
- prune: one chunk of 5,000 accepted rows (in a transaction rolled back) and the count an
  hourly prune makes when nothing is old enough.

Run: .venv/bin/python bench/bench_ops_reads.py [--history 10000000] [--keep]
(--keep leaves the database for a second run, which then skips building it.)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import support
from prometheus_client import generate_latest
from sqlalchemy import Engine

from models import Status
from worker.database import make_engine
from worker.ops import metrics, queries, writes
from worker.ops.access import operator_settings
from worker.ops.cli import main as outbox
from worker.ops.snapshot import take_snapshot

DATABASE = "outbox_bench_ops_reads"
REPEATS = 30
BACKLOG = 10_000
CONTENT = '{"$type": "SMSProject", "projectId": 123, "placeholders": ["John", "Order #5678"]}'
STEP = 1_000_000
REDIS_URL = os.environ.get("OUTBOX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def sql(url: str, statement: str, parameters: tuple[object, ...] = ()) -> None:
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as connection:
        connection.execute(statement, parameters)  # type: ignore[arg-type]


def add_history(url: str, history: int) -> None:
    """``history`` finished rows: 99% accepted over 30 days, 0.8% failed, 0.2% cancelled."""
    for first in range(1, history + 1, STEP):
        last = min(first + STEP - 1, history)
        started = time.monotonic()
        sql(
            url,
            """
            INSERT INTO outbox_messages (client_message_id, recipient, content, status,
                attempts, tracking_id, last_error, accepted_at, created_at, updated_at,
                next_attempt_at)
            SELECT 'h-' || g, '46701234567', %s::jsonb, s.status, 1,
                   CASE WHEN s.status = 'accepted' THEN md5(g::text) END,
                   CASE WHEN s.status = 'failed' THEN
                        (ARRAY['rejected: recipient is blocked', 'gave up after 10 attempts: busy',
                               'invalid: content: projectId must be a number',
                               'expired: not accepted within 1 day'])[1 + g %% 4] END,
                   CASE WHEN s.status = 'accepted' THEN t.at END, t.at, t.at, t.at
            FROM generate_series(%s::bigint, %s::bigint) AS g,
                 LATERAL (SELECT now() - interval '30 days' * (1 - g::float8 / %s) AS at) AS t,
                 LATERAL (SELECT CASE WHEN g %% 1000 < 8 THEN 'failed'
                                      WHEN g %% 1000 < 10 THEN 'cancelled'
                                      ELSE 'accepted' END AS status) AS s
            """,
            (CONTENT, first, last, history),
        )
        print(f"  history rows {last:>12,} ({time.monotonic() - started:.0f} s)", flush=True)


def set_backlog(url: str, pending: int) -> None:
    """Exactly ``pending`` pending rows over the lanes (a tenth scheduled), and 200 sending."""
    sql(url, "DELETE FROM outbox_messages WHERE status IN ('pending', 'sending')")
    sql(
        url,
        """
        INSERT INTO outbox_messages (client_message_id, recipient, content, priority, status,
            attempts, last_error, next_attempt_at, locked_until)
        SELECT 'b-' || g, '46701234567', %s::jsonb, g %% 3,
               CASE WHEN g <= 200 THEN 'sending' ELSE 'pending' END,
               CASE WHEN g %% 7 = 0 THEN 1 ELSE 0 END,
               CASE WHEN g %% 7 = 0 THEN 'transient: busy' END,
               now() + CASE WHEN g %% 10 = 0 THEN interval '2 hours'
                            ELSE -interval '1 second' * (g %% 600) END,
               CASE WHEN g <= 200 THEN now() + interval '1 minute' END
        FROM generate_series(1, %s) AS g
        """,
        (CONTENT, pending + 200),
    )
    sql(url, "VACUUM ANALYZE outbox_messages")


def timed(work: Callable[[], object], repeats: int = REPEATS) -> tuple[float, float]:
    """Median and slowest milliseconds of ``work`` (after one warm-up run)."""
    work()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


def quiet(*argv: str) -> Callable[[], object]:
    def run() -> object:
        with contextlib.redirect_stdout(io.StringIO()):
            code = outbox(list(argv))
        assert code == 0
        return code

    return run


def prune_chunk(engine: Engine) -> object:
    with engine.connect() as connection, connection.begin() as transaction:
        cutoff = datetime.now(UTC) - timedelta(days=29)
        deleted = writes.prune_finished(
            connection, status=Status.ACCEPTED, cutoff=cutoff, chunk=writes.CHUNK
        )
        transaction.rollback()
    assert deleted == writes.CHUNK
    return deleted


def nothing_to_prune(engine: Engine) -> object:
    with engine.begin() as connection:
        cutoff = datetime.now(UTC) - timedelta(days=31)
        return writes.count_finished(connection, status=Status.ACCEPTED, cutoff=cutoff)


def report(label: str, figures: tuple[float, float]) -> None:
    median, slowest = figures
    print(f"  {label:<62} {median:8.1f} ms median, {slowest:8.1f} ms slowest", flush=True)


def measure(url: str, engine: Engine) -> None:
    settings = operator_settings({"OUTBOX_DATABASE_URL": url, "CELERY_BROKER_URL": REDIS_URL})
    registry = metrics.registry_for(engine, settings)
    snapshot = take_snapshot(engine, now=datetime.now(UTC), circuit_failures=5)
    figures = snapshot.figures
    estimated = ", ".join(sorted(figures.estimated)) or "none"
    print(
        f"  snapshot: {figures.by_status} (estimated: {estimated}); due now {figures.due_now:,}",
        flush=True,
    )
    report(
        "metrics scrape (snapshot + Redis counters, rendered)",
        timed(lambda: generate_latest(registry)),
    )
    report("`outbox stats`, in-process", timed(quiet("--database-url", url, "stats")))
    report(
        "`outbox stats --json`, in-process", timed(quiet("--database-url", url, "stats", "--json"))
    )
    started = time.perf_counter()
    subprocess.run(
        [str(support.VENV_BIN / "outbox"), "--database-url", url, "stats"],
        check=True,
        capture_output=True,
    )
    print(
        f"  {'`outbox stats` as a process (Python start and imports included)':<62} "
        f"{(time.perf_counter() - started) * 1000:8.1f} ms",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=10_000_000, help="finished rows")
    parser.add_argument("--keep", action="store_true", help="keep the database for a rerun")
    args = parser.parse_args()
    support.heading(f"operator reads beside {args.history:,} finished rows")
    url = support.database_url(DATABASE)
    try:
        with psycopg.connect(url.replace("+psycopg", "")) as connection:
            row = connection.execute("SELECT count(*) FROM outbox_messages").fetchone()
            built = bool(row and row[0] >= args.history)
    except psycopg.Error:
        built = False
    if not built:
        url = support.create_database(DATABASE)
        add_history(url, args.history)
    engine = make_engine(url)
    try:
        for backlog in (BACKLOG, 10 * BACKLOG):
            set_backlog(url, backlog)
            print(f"backlog of {backlog:,} pending rows and 200 sending:", flush=True)
            measure(url, engine)
            report(
                "snapshot alone",
                timed(lambda: take_snapshot(engine, now=datetime.now(UTC), circuit_failures=5)),
            )
        set_backlog(url, BACKLOG)
        print("for comparison and for prune:", flush=True)
        with engine.connect() as connection:
            report(
                "full GROUP BY status (what every scrape used to run)",
                timed(lambda: queries.status_counts(connection), repeats=5),
            )
        report(
            "prune: one chunk of 5,000 accepted rows (rolled back)",
            timed(lambda: prune_chunk(engine), repeats=5),
        )
        report(
            "hourly prune with nothing old enough (its count)",
            timed(lambda: nothing_to_prune(engine)),
        )
    finally:
        engine.dispose()
        if not args.keep:
            support.drop_database(DATABASE)


if __name__ == "__main__":
    main()
