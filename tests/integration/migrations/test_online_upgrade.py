"""An upgrade from the first revision to head beside a producer inserting and a worker claiming.

The table is filled at revision 0001 (OUTBOX_TEST_MIGRATE_ROWS rows, 100,000 by default; the
1,000,000-row figure is bench/bench_migrate.py's). Every insert and claim made during the
upgrade must succeed and be kept; the longest stall of each is printed (run with -s).
"""

from __future__ import annotations

import os

import psycopg
from alembic import command

from tests.conftest import ROOT, alembic_config
from tests.integration.migrations.live import (
    LiveLoad,
    dsn_of,
    fill,
    stall_report,
    upgrade_in_a_process,
)

ROWS = int(os.environ.get("OUTBOX_TEST_MIGRATE_ROWS", "100000"))
HEAD = "0016_key_gates"


def test_an_upgrade_beside_a_producer_and_a_worker(empty_postgres_url: str) -> None:
    config = alembic_config(empty_postgres_url)
    command.upgrade(config, "0001")
    fill(empty_postgres_url, ROWS)

    with LiveLoad(empty_postgres_url) as load:
        upgrade = upgrade_in_a_process(empty_postgres_url, ROOT / "alembic.ini")
    print(f"\n{ROWS:,} rows: {stall_report(load, upgrade)}")

    assert upgrade.returncode == 0, upgrade.output
    assert load.producer.errors == []
    assert load.worker.errors == []
    assert load.producer.count_within(upgrade.start, upgrade.end) > 0
    assert load.worker.count_within(upgrade.start, upgrade.end) > 0
    with psycopg.connect(dsn_of(empty_postgres_url)) as connection:
        kept = connection.execute(
            "SELECT count(*) FROM outbox_messages WHERE client_message_id LIKE 'live-%'"
        ).fetchone()
        accepted = connection.execute(
            "SELECT count(*) FROM outbox_messages WHERE attempts = 1 AND status = 'accepted'"
        ).fetchone()
        version = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert kept == (len(load.inserted),)
    assert accepted == (load.recorded,)
    assert version == (HEAD,)
    command.check(config)  # the schema the models describe, though built beside the load
