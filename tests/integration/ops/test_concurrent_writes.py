"""Operator writes beside each other and beside a dispatching worker, on real PostgreSQL.

Each round starts real `outbox` processes together against one database while threads claim
and record batches as workers do. A row-level trigger writes every status change and every
deletion, with the row as the statement finally touched it, into an audit table; the round then
checks that no command died (a deadlock kills one), that every change is one a command may make,
that prune deleted only what it was asked to (failed before its cutoff: never a row retry had
just brought back) and that the counts the commands printed are the rows they changed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine

from tests.integration.ops.drain import draining, mixed
from worker.database import make_engine

OUTBOX = str(Path(sys.executable).with_name("outbox"))
ROUNDS = 6
FAILED = 12_000  # per round: half failed two hours ago (prune's), half a minute ago
PENDING = 3_000  # per round: due rows the drain claims beside the commands

AUDIT = """
CREATE TABLE audit (id bigint, old_status text, new_status text, old_updated_at timestamptz,
                    old_created_at timestamptz, old_attempts integer, old_last_error text);
CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO audit VALUES (OLD.id, OLD.status, NULL, OLD.updated_at, OLD.created_at,
                                  OLD.attempts, OLD.last_error);
        RETURN OLD;
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO audit VALUES (OLD.id, OLD.status, NEW.status, OLD.updated_at,
                                  OLD.created_at, OLD.attempts, OLD.last_error);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit_row AFTER UPDATE OR DELETE ON outbox_messages
    FOR EACH ROW EXECUTE FUNCTION audit_row();
"""
CONTENT = '{"$type": "SMSProject", "projectId": 1}'
ROUND_ROWS = [
    """
    INSERT INTO outbox_messages (client_message_id, recipient, content, status, attempts,
        last_error, created_at, updated_at, next_attempt_at)
    SELECT 'f-' || g, '46701234567', %(content)s::jsonb, 'failed', 3,
           'gave up after 3 attempts: busy', now() - interval '3 hours',
           now() - CASE WHEN g %% 2 = 0 THEN interval '2 hours' ELSE interval '1 minute' END,
           now() - interval '3 hours'
    FROM generate_series(1, %(failed)s) AS g
    """,
    """
    INSERT INTO outbox_messages (client_message_id, recipient, content, status,
        created_at, updated_at, next_attempt_at)
    SELECT 'p-' || g, '46701234567', %(content)s::jsonb, 'pending',
           now() - interval '10 minutes', now() - interval '10 minutes',
           now() - interval '10 minutes'
    FROM generate_series(1, %(pending)s) AS g
    """,
    """
    INSERT INTO outbox_messages (client_message_id, recipient, content, status,
        created_at, updated_at)
    SELECT 'c-' || g, '46701234567', %(content)s::jsonb, 'cancelled',
           now() - interval '3 hours', now() - interval '2 hours'
    FROM generate_series(1, %(cancelled)s) AS g
    """,
]


@dataclass(frozen=True)
class Finished:
    """One `outbox` process after it exited."""

    argv: tuple[str, ...]
    code: int
    out: str
    err: str

    def number(self, pattern: str) -> int:
        """The count the command printed (0 when it found nothing to do)."""
        if ": nothing to " in self.out:
            return 0
        found = re.search(pattern, self.out)
        assert found, (self.argv, self.out, self.err)
        return int(found.group(1).replace(",", ""))


def dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def audited(postgres_url: str) -> Iterator[tuple[str, Engine]]:
    with psycopg.connect(dsn(postgres_url), autocommit=True) as connection:
        connection.execute(AUDIT)  # type: ignore[arg-type]
    engine = make_engine(postgres_url)
    yield postgres_url, engine
    engine.dispose()


def fill(url: str, *, failed: int, pending: int, cancelled: int = 0) -> None:
    """A fresh round: failed rows (half old, half recent), due pending rows, old cancelled rows."""
    with psycopg.connect(dsn(url), autocommit=True) as connection:
        connection.execute("TRUNCATE outbox_messages, audit RESTART IDENTITY")
        parameters = {
            "content": CONTENT,
            "failed": failed,
            "pending": pending,
            "cancelled": cancelled,
        }
        for statement in ROUND_ROWS:
            connection.execute(statement, parameters)  # type: ignore[arg-type]
        connection.execute("ANALYZE outbox_messages")


def run_together(url: str, *commands: tuple[str, ...], reverse: bool = False) -> list[Finished]:
    """Start every command at once (real processes; the last first with ``reverse``) and wait
    for all of them; their results in the order given."""
    environment = dict(os.environ, OUTBOX_DATABASE_URL=url, CELERY_BROKER_URL="filesystem://")
    order = range(len(commands) - 1, -1, -1) if reverse else range(len(commands))
    processes = {
        index: subprocess.Popen(
            [OUTBOX, *commands[index]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        for index in order
    }
    finished = []
    for index, argv in enumerate(commands):
        out, err = processes[index].communicate(timeout=240)
        finished.append(Finished(argv, processes[index].returncode, out, err))
    return finished


def audit(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn(url)) as connection:
        return connection.execute(
            "SELECT id, old_status, new_status, old_updated_at < now() - interval '59 minutes', "
            "old_attempts, old_last_error FROM audit"
        ).fetchall()


def statuses(url: str) -> dict[str, int]:
    with psycopg.connect(dsn(url)) as connection:
        rows = connection.execute("SELECT status, count(*) FROM outbox_messages GROUP BY 1")
        return {str(status): int(count) for status, count in rows}


WORKER_MOVES = {
    ("pending", "sending"),
    ("sending", "accepted"),
    ("sending", "pending"),
    ("sending", "failed"),
}


@pytest.mark.timeout(900)  # real processes, rounds after rounds, on two shared cores
def test_retry_prune_and_a_drain_at_once_never_deadlock_nor_lose_a_row(
    audited: tuple[str, Engine],
) -> None:
    url, engine = audited
    outcomes = []
    for number in range(ROUNDS):
        fill(url, failed=FAILED, pending=PENDING)
        with draining(engine, threads=2, outcome=mixed) as drain:
            retry, prune = run_together(
                url,
                ("retry", "--all", "--renew-age", "--yes"),
                ("prune", "--status", "failed", "--older-than", "1h", "--yes"),
                reverse=number % 2 == 1,  # each gets a head start in turn
            )
        for command in (retry, prune):
            assert command.code == 0, (command.argv, command.err)
        retried = retry.number(r"retried ([\d,]+) messages")
        deleted = prune.number(r"deleted ([\d,]+) failed messages")
        changes = audit(url)
        moves = {(old, new) for _, old, new, *_ in changes if new is not None}
        assert moves <= WORKER_MOVES | {("failed", "pending")}, moves
        removed = [row for row in changes if row[2] is None]
        # Prune deleted only rows that were failed before its cutoff in the row it deleted:
        # never one that retry had made pending, nor one that failed a minute ago.
        assert all(old == "failed" and was_old for _, old, _, was_old, *_ in removed), removed
        assert len(removed) == deleted
        # Retry moved failed rows only (the drain fails a few rows of its own meanwhile: they
        # failed after retry began, so it leaves them) and said how many.
        by_retry = [row for row in changes if (row[1], row[2]) == ("failed", "pending")]
        assert len(by_retry) == retried
        # Every failed row of the round (ids 1 to FAILED) was either retried or pruned, once.
        ours = [row[0] for row in by_retry if row[0] <= FAILED]
        assert len(ours) + deleted == FAILED
        assert len(set(ours) | {row[0] for row in removed}) == FAILED
        outcomes.append((retried, deleted, drain.claimed))
    print(f"{ROUNDS} rounds of retry + prune + drain: (retried, pruned, claimed) {outcomes}")


@pytest.mark.timeout(600)
def test_cancels_and_prunes_beside_a_drain_touch_only_pending_never_sent_rows(
    audited: tuple[str, Engine],
) -> None:
    url, engine = audited
    for _ in range(ROUNDS // 2):
        fill(url, failed=0, pending=PENDING * 3, cancelled=PENDING)
        with draining(engine, threads=2, outcome=mixed):
            first, second, prune, resume = run_together(
                url,
                ("cancel", "--all", "--yes"),
                ("cancel", "--all", "--yes"),
                ("prune", "--status", "cancelled", "--older-than", "1h", "--yes"),
                ("resume",),
            )
        for command in (first, second, prune, resume):
            assert command.code == 0, (command.argv, command.err)
        changes = audit(url)
        cancelled = [row for row in changes if row[2] == "cancelled"]
        # Only pending rows no worker had sent (the drain's retried rows have attempts and a
        # last error: they may have reached Wiraya, so cancel leaves them).
        assert all(row[1] == "pending" and row[4] == 0 and row[5] is None for row in cancelled)
        total = first.number(r"cancelled ([\d,]+) messages") + second.number(
            r"cancelled ([\d,]+) messages"
        )
        assert total == len(cancelled) == len({row[0] for row in cancelled})
        assert not [row for row in changes if row[1] == "cancelled" and row[2] is not None]
        deleted = [row for row in changes if row[2] is None]
        assert all(row[1] == "cancelled" and row[3] for row in deleted)
        assert prune.number(r"deleted ([\d,]+) cancelled messages") == len(deleted) == PENDING
        assert statuses(url).get("sending", 0) == 0
