"""The start check's cost: one query asking PostgreSQL for every right a process needs.

On a scratch outbox whose roles come from `outbox grants`, each process's check (the worker,
beat, the receiver) runs under its own role; printed: the statements it sends and the median and
95th-percentile time of one check over a warm connection.

Run: .venv/bin/python bench/bench_start_check.py [--runs 200]
"""

from __future__ import annotations

import argparse
import os
import time

import support
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from worker.database import make_engine
from worker.ops.grants import grants_sql, quote
from worker.ops.privileges import Duty, beat_duties, receiver_duties, worker_duties
from worker.ops.start_check import missing_right

ROLES = {"worker": f"bench_worker_{os.getpid()}", "receiver": f"bench_receiver_{os.getpid()}"}
CHECKS = {
    "worker": ("worker", worker_duties()),
    "beat": ("worker", beat_duties()),
    "receiver": ("receiver", receiver_duties()),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    support.heading("start check: one query per process")
    try:
        with support.scratch_database(f"bench_start_check_{os.getpid()}") as url:
            owner = make_engine(url)
            with owner.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql(grants_sql(ROLES, create=True))  # type: ignore[arg-type]
            owner.dispose()
            for process, (role, duties) in CHECKS.items():
                measure(make_url(url).set(username=ROLES[role]), process, duties, args.runs)
    finally:
        with support.admin_connection() as admin:
            for name in ROLES.values():
                admin.execute(f"DROP ROLE IF EXISTS {quote(name)}")


def measure(url: URL, process: str, duties: tuple[Duty, ...], runs: int) -> None:
    """Print the statements one check sends and its median and p95 time."""
    engine = make_engine(url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    times = []
    with engine.connect() as connection:
        assert missing_right(connection, process, duties) is None
        sent = len(statements)
        for _ in range(runs):
            started = time.perf_counter()
            missing_right(connection, process, duties)
            times.append((time.perf_counter() - started) * 1000)
    engine.dispose()
    median, p95 = support.percentile(times, 0.5), support.percentile(times, 0.95)
    print(f"{process:9} {sent} statement  median {median:.2f} ms  p95 {p95:.2f} ms")


if __name__ == "__main__":
    main()
