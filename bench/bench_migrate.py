"""The longest producer and worker stall while `alembic upgrade head` runs on a filled table.

A PostgreSQL table at revision 0001 is filled with --rows messages (one INSERT over
generate_series); a producer inserts one message per transaction and a worker claims and
records batches of ten, each on a connection of its own, first for a quiet window as long as
the upgrade (the machine's own noise), then while `alembic upgrade head` runs in a process of
its own. Prints the upgrade's duration and the longest single operation of each during it.

Run: .venv/bin/python bench/bench_migrate.py [--rows 1000000]
The migrations of another checkout (e.g. main's, for a before/after figure):
    git archive main | tar -x -C /tmp/outbox-main
    .venv/bin/python bench/bench_migrate.py --alembic-ini /tmp/outbox-main/alembic.ini
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import support

sys.path.insert(0, str(support.ROOT))

from tests.integration.migrations.live import (
    LiveLoad,
    fill,
    stall_report,
    upgrade_in_a_process,
)

DATABASE = "outbox_bench_migrate"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--alembic-ini", type=Path, default=support.ROOT / "alembic.ini")
    arguments = parser.parse_args()
    support.heading(f"upgrade 0001 -> head on {arguments.rows:,} rows ({arguments.alembic_ini})")
    support.drop_database(DATABASE)
    with support.admin_connection() as connection:
        connection.execute(f"CREATE DATABASE {DATABASE}")
    url = support.database_url(DATABASE)
    try:
        measure(url, arguments.rows, arguments.alembic_ini)
    finally:
        support.drop_database(DATABASE)


def measure(url: str, rows: int, alembic_ini: Path) -> None:
    """Fill at 0001, then the upgrade beside the load, then the same load alone."""
    first = upgrade_in_a_process(url, alembic_ini, "0001")
    if first.returncode != 0:
        sys.exit(first.output)
    began = time.perf_counter()
    fill(url, rows)
    print(f"filled in {time.perf_counter() - began:.1f} s")
    with LiveLoad(url) as load:
        upgrade = upgrade_in_a_process(url, alembic_ini)
        quiet_start = time.perf_counter()
        time.sleep(upgrade.end - upgrade.start)
        quiet_end = time.perf_counter()
    if upgrade.returncode != 0:
        sys.exit(upgrade.output)
    print(stall_report(load, upgrade))
    print(
        "the same load after it, no upgrade: longest stall: producer "
        f"{load.producer.longest_within(quiet_start, quiet_end) * 1000:.0f} ms, worker "
        f"{load.worker.longest_within(quiet_start, quiet_end) * 1000:.0f} ms"
    )
    errors = load.producer.errors + load.worker.errors
    print(f"errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))


if __name__ == "__main__":
    main()
