"""Every migration, present and future, changes a live PostgreSQL table without stopping it.

Walks the revisions from base to head (whatever they are: new ones are checked as they come)
and fails naming the migration and the statement that takes a lock stopping writers without a
short lock_timeout, or reads or writes rows while holding one (see watch.py); or that leaves,
interrupted before any statement, a state from which running it again does not reach the
schema an uninterrupted run reaches.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import suppress
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.script import ScriptDirectory

from models.databases.postgresql import MATCH_LOCK
from tests.conftest import alembic_config
from tests.integration.migrations.live import dsn_of, fill
from tests.integration.migrations.watch import (
    Interrupt,
    Interrupted,
    LockWatch,
    interrupting,
    watching,
)
from worker.errors import OperatorError
from worker.ops import online_ddl
from worker.ops.migrate import MIGRATION_LOCK, migrate

ROWS = 300  # enough for every index and scan to have rows to read
SCHEMA = {
    "columns": """
        SELECT c.relname, row_number() OVER (PARTITION BY c.relname ORDER BY a.attnum),
               a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
          AND a.attnum > 0 AND NOT a.attisdropped""",
    "indexes": """
        SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid
        FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid
        WHERE c.relnamespace = 'public'::regnamespace""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace""",
    "triggers": """
        SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal""",
    # How a function runs is schema too: its owner's rights, its settings, who may call it.
    "functions": """
        SELECT proname, md5(prosrc), prosecdef, proconfig, proacl::text[] FROM pg_proc
        WHERE pronamespace = 'public'::regnamespace""",
}


@pytest.fixture(autouse=True)
def statement_by_statement(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each statement of a short transaction sent on its own, so the watch sees each."""
    monkeypatch.setattr(online_ddl, "ONE_ROUND_TRIP", False)


def revisions() -> list[tuple[str, str]]:
    """(revision, the one before it or "base"), from the first to the head."""
    script = ScriptDirectory.from_config(alembic_config("postgresql+psycopg://unused/unused"))
    steps = [(r.revision, str(r.down_revision or "base")) for r in script.walk_revisions()]
    return steps[::-1]


def schema(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn_of(url)) as connection:
        return {
            part: sorted(connection.execute(query).fetchall(), key=repr)  # type: ignore[arg-type]
            for part, query in SCHEMA.items()
        }


def tables(url: str) -> set[str]:
    with psycopg.connect(dsn_of(url)) as connection:
        query = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        return {name for (name,) in connection.execute(query)}


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(dsn_of(url), autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)  # type: ignore[arg-type]


def at_revision(url: str, revision: str) -> None:
    """The database at ``revision``, with rows in outbox_messages from 0001 on."""
    config = alembic_config(url)
    if revision == "base":
        return
    command.upgrade(config, "0001")
    fill(url, ROWS)
    command.upgrade(config, revision)


def test_no_migration_takes_a_long_lock(empty_postgres_url: str) -> None:
    config = alembic_config(empty_postgres_url)
    breaches: list[str] = []
    for revision, _ in revisions():
        watch = LockWatch(revision, tables(empty_postgres_url))
        with watching(watch):
            command.upgrade(config, revision)
        breaches += watch.breaches
        if revision == "0001":
            fill(empty_postgres_url, ROWS)
    assert breaches == [], "\n".join(breaches)


@pytest.mark.parametrize(("revision", "previous"), revisions())
def test_a_migration_interrupted_anywhere_runs_again(
    empty_postgres_url: str, revision: str, previous: str
) -> None:
    config = alembic_config(empty_postgres_url)
    at_revision(empty_postgres_url, previous)
    command.upgrade(config, revision)
    expected = schema(empty_postgres_url)
    command.downgrade(config, previous)
    for point in range(1, 1000):
        with interrupting(Interrupt(point)) as interrupt, suppress(Interrupted):
            command.upgrade(config, revision)
        if interrupt.statement is None:
            break  # the whole migration ran: every point has been tried
        command.upgrade(config, revision)
        assert schema(empty_postgres_url) == expected, (
            f"migration {revision}, interrupted before `{interrupt.statement}` and run again, "
            "does not reach the schema an uninterrupted run reaches"
        )
        command.downgrade(config, previous)


def test_the_early_report_function_runs_as_its_owner_after_0011_replaces_it_again(
    empty_postgres_url: str,
) -> None:
    # CREATE OR REPLACE FUNCTION (0011) resets SECURITY DEFINER and the search path: 0012,
    # which sets them, must come after it in every run.
    config = alembic_config(empty_postgres_url)
    command.upgrade(config, "head")
    expected = schema(empty_postgres_url)["functions"]
    command.downgrade(config, "0010_raw_sql_rows")
    command.upgrade(config, "head")
    functions = schema(empty_postgres_url)["functions"]
    assert functions == expected
    definers = {name: (definer, config) for name, _, definer, config, _ in functions}
    assert definers["outbox_messages_match_reports"] == (True, ["search_path=public, pg_temp"])


def test_an_index_an_interrupted_build_left_invalid_is_built_again(
    empty_postgres_url: str,
) -> None:
    at_revision(empty_postgres_url, "0003_sending_gate")
    with pytest.raises(psycopg.errors.DivisionByZero):  # fails half-way, as a kill would
        execute(
            empty_postgres_url,
            "CREATE INDEX CONCURRENTLY ix_outbox_messages_accepted ON outbox_messages ((id / 0))",
        )
    assert ("ix_outbox_messages_accepted",) in invalid_indexes(empty_postgres_url)

    command.upgrade(alembic_config(empty_postgres_url), "head")
    assert invalid_indexes(empty_postgres_url) == []
    command.check(alembic_config(empty_postgres_url))  # the index as the models say


def invalid_indexes(url: str) -> list[tuple[str]]:
    with psycopg.connect(dsn_of(url)) as connection:
        query = (
            "SELECT indexrelid::regclass::text FROM pg_index "
            "WHERE NOT indisvalid AND indrelid = 'outbox_messages'::regclass"
        )
        return connection.execute(query).fetchall()  # type: ignore[return-value]


def test_indexes_built_by_hand_before_the_upgrade_are_kept(empty_postgres_url: str) -> None:
    at_revision(empty_postgres_url, "0003_sending_gate")
    execute(
        empty_postgres_url,
        "CREATE INDEX CONCURRENTLY ix_outbox_messages_accepted ON outbox_messages "
        "(accepted_at, id) WHERE status = 'accepted'",
    )
    command.upgrade(alembic_config(empty_postgres_url), "head")
    command.check(alembic_config(empty_postgres_url))


@pytest.fixture
def long_transaction(empty_postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    """At revision 0001, a session whose insert into outbox_messages is not committed."""
    at_revision(empty_postgres_url, "0001")
    with psycopg.connect(dsn_of(empty_postgres_url)) as holder:
        holder.execute(
            "INSERT INTO outbox_messages (client_message_id, recipient, content) "
            """VALUES ('held', '46701234567', '{"$type": "SMSProject", "projectId": 1}')"""
        )
        yield holder


def test_a_migration_behind_a_long_transaction_lets_writers_through(
    empty_postgres_url: str, long_transaction: psycopg.Connection[Any]
) -> None:
    upgrade = threading.Thread(
        target=command.upgrade, args=(alembic_config(empty_postgres_url), "0002")
    )
    upgrade.start()
    try:
        wait_for_the_migration_to_wait(empty_postgres_url)
        # Without a lock_timeout the migration's queued request would hold these back until
        # the long transaction ends; 5 s stands for "never".
        with psycopg.connect(dsn_of(empty_postgres_url)) as writer:
            writer.execute("SET lock_timeout = '5s'")
            for number in range(20):
                writer.execute(
                    "INSERT INTO outbox_messages (client_message_id, recipient, content) "
                    f"""VALUES ('w{number}', '46701234567', '{{"$type": "SMSProject", """
                    """"projectId": 1}')"""
                )
                writer.execute("SELECT count(*) FROM outbox_messages").fetchone()
                writer.commit()
    finally:
        long_transaction.commit()
        upgrade.join(timeout=60)
    with psycopg.connect(dsn_of(empty_postgres_url)) as connection:
        version = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert version == ("0002",)


def wait_for_the_migration_to_wait(url: str) -> None:
    """Until the migration has asked for its lock at least once."""
    name = url.rsplit("/", 1)[1]
    query = (
        "SELECT 1 FROM pg_stat_activity WHERE datname = %s "
        "AND query LIKE 'ALTER TABLE outbox_messages ADD COLUMN%%'"
    )
    with psycopg.connect(dsn_of(url), autocommit=True) as observer:
        for _ in range(3000):
            if observer.execute(query, (name,)).fetchone():  # type: ignore[arg-type]
                return
            threading.Event().wait(0.01)
    pytest.fail("the migration never asked for its lock")


@pytest.fixture
def blocked_for_good(
    empty_postgres_url: str,
    long_transaction: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """At 0001 behind a transaction that outlasts the migration's patience (made 0.5 s)."""
    monkeypatch.setattr(online_ddl, "GIVE_UP_AFTER", timedelta(milliseconds=500))
    return empty_postgres_url


def test_a_migration_that_cannot_take_its_lock_gives_up_naming_the_statement(
    blocked_for_good: str,
) -> None:
    with pytest.raises(online_ddl.LockNotTaken, match="ADD COLUMN IF NOT EXISTS priority"):
        command.upgrade(alembic_config(blocked_for_good), "0002")


def test_the_migration_lock_is_not_the_lock_every_record_takes() -> None:
    assert MIGRATION_LOCK != MATCH_LOCK


def test_outbox_migrate_that_gives_up_says_why_in_one_line(blocked_for_good: str) -> None:
    with pytest.raises(OperatorError) as refused:
        migrate(blocked_for_good)
    message = str(refused.value)
    assert "\n" not in message
    assert "migration failed at" in message and "long transaction holds the table" in message
