"""An upgrade beside a live outbox: a filled table, a producer and a worker timing every operation.

Shared by tests/integration/migrations/test_online_upgrade.py and bench/bench_migrate.py. The
producer inserts one message per transaction (the contract's three-column INSERT); the worker
reads the gate, claims up to ten due rows (FOR UPDATE SKIP LOCKED) and records them accepted
with a tracking id (two transactions, each timed), in statements every revision since 0001
accepts and serves from an index (no order: the claim index's columns change at 0002). A stall
is the longest single operation that overlapped the upgrade.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

CONTENT = '{"$type": "SMSProject", "projectId": 1}'
# One row in twenty pending and due (the worker's), one in fifty failed, one in fifty
# cancelled, the rest accepted a day ago: the shape a pruned production table has.
FILL = f"""
INSERT INTO outbox_messages (client_message_id, recipient, content, status, next_attempt_at,
                             tracking_id, accepted_at)
SELECT 'seed-' || g, '46701234567', '{CONTENT}'::jsonb,
       CASE WHEN g %% 20 = 0 THEN 'pending' WHEN g %% 50 = 1 THEN 'failed'
            WHEN g %% 50 = 2 THEN 'cancelled' ELSE 'accepted' END,
       now() - interval '1 hour',
       CASE WHEN g %% 20 <> 0 AND g %% 50 > 2 THEN md5(g::text) END,
       CASE WHEN g %% 20 <> 0 AND g %% 50 > 2 THEN now() - interval '1 day' END
FROM generate_series(1, %(rows)s) AS g
"""
INSERT = (
    "INSERT INTO outbox_messages (client_message_id, recipient, content) "
    f"VALUES (%s, '46701234567', '{CONTENT}')"
)
GATE = "SELECT name FROM outbox_dispatch_gate WHERE name = 'wiraya'"
CLAIM = """
UPDATE outbox_messages SET status = 'sending', attempts = attempts + 1,
       locked_until = now() + interval '1 minute'
WHERE id IN (SELECT id FROM outbox_messages
             WHERE status = 'pending' AND next_attempt_at <= now()
             LIMIT 10 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
# How long each of the load's sessions has been waiting for a lock (pg_locks.waitstart).
LOCK_WAITS = """
SELECT pid, extract(epoch FROM clock_timestamp() - min(waitstart)) FROM pg_locks
WHERE NOT granted AND pid = ANY(%s) GROUP BY pid
"""
RECORD = """
UPDATE outbox_messages SET status = 'accepted', tracking_id = md5(id::text),
       accepted_at = now(), locked_until = NULL
WHERE id = ANY(%s) AND status = 'sending'
"""


def dsn_of(url: str) -> str:
    """A SQLAlchemy psycopg URL as libpq takes it."""
    return url.replace("postgresql+psycopg://", "postgresql://")


def fill(url: str, rows: int) -> None:
    """``rows`` messages in one INSERT (generate_series), then fresh planner statistics."""
    with psycopg.connect(dsn_of(url), autocommit=True) as connection:
        connection.execute(FILL, {"rows": rows})  # type: ignore[arg-type]
        connection.execute("ANALYZE outbox_messages")


@dataclass
class Timings:
    """Every operation of one role: when it started and how long it took, and its failures."""

    spans: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # (when seen, how long it had waited so far) for each lock wait seen
    lock_waits: list[tuple[float, float]] = field(default_factory=list)
    pid: int = 0

    def longest_within(self, start: float, end: float) -> float:
        """The longest operation that overlapped [start, end], in seconds."""
        return max(
            (took for began, took in self.spans if began <= end and began + took >= start),
            default=0.0,
        )

    def longest_lock_wait_within(self, start: float, end: float) -> float:
        """The longest wait for a lock seen during [start, end], in seconds (to within 5 ms)."""
        return max(
            (waited for seen, waited in self.lock_waits if start <= seen <= end), default=0.0
        )

    def count_within(self, start: float, end: float) -> int:
        return sum(1 for began, took in self.spans if start <= began and began + took <= end)


class LiveLoad:
    """A producer and a worker, each a thread on a connection of its own, until `stop`."""

    def __init__(self, url: str) -> None:
        self.dsn = dsn_of(url)
        self.producer = Timings()
        self.worker = Timings()
        self.inserted: list[str] = []
        self.recorded = 0
        self._claimed: list[int] = []
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=([self._produce], self.producer)),
            threading.Thread(target=self._run, args=([self._claim, self._record], self.worker)),
            threading.Thread(target=self._observe),
        ]

    def __enter__(self) -> LiveLoad:
        for thread in self._threads:
            thread.start()
        while not (self.producer.spans and self.worker.spans):  # both have run once
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(
        self, operations: list[Callable[[psycopg.Connection[Any]], None]], timings: Timings
    ) -> None:
        # Commits do not wait for the disk: the stalls measured are the upgrade's locks and
        # work, not the flush queue of a disk shared with its index builds.
        with psycopg.connect(self.dsn, options="-c synchronous_commit=off") as connection:
            timings.pid = connection.info.backend_pid
            while not self._stopping.is_set():
                for operation in operations:
                    began = time.perf_counter()
                    try:
                        operation(connection)
                    except psycopg.Error as error:
                        connection.rollback()
                        timings.errors.append(f"{error.__class__.__name__}: {error}")
                    timings.spans.append((began, time.perf_counter() - began))
                time.sleep(0.002)

    def _observe(self) -> None:
        """Every 5 ms, how long each of the two sessions has been waiting for a lock."""
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            while not self._stopping.is_set():
                pids = {timings.pid: timings for timings in (self.producer, self.worker)}
                for pid, waited in connection.execute(LOCK_WAITS, (list(pids),)):
                    pids[pid].lock_waits.append((time.perf_counter(), float(waited)))
                time.sleep(0.005)

    def _produce(self, connection: psycopg.Connection[Any]) -> None:
        client_message_id = f"live-{len(self.inserted)}"
        connection.execute(INSERT, (client_message_id,))
        connection.commit()
        self.inserted.append(client_message_id)

    def _claim(self, connection: psycopg.Connection[Any]) -> None:
        connection.execute(GATE).fetchall()
        self._claimed = [row[0] for row in connection.execute(CLAIM).fetchall()]
        connection.commit()

    def _record(self, connection: psycopg.Connection[Any]) -> None:
        self.recorded += connection.execute(RECORD, (self._claimed,)).rowcount
        connection.commit()
        self._claimed = []


@dataclass
class Upgrade:
    """One `alembic upgrade head` in a process of its own: when it ran and what it said."""

    start: float
    end: float
    returncode: int
    output: str


def upgrade_in_a_process(url: str, alembic_ini: Path, target: str = "head") -> Upgrade:
    """Run `alembic upgrade` as a deploy's migrate step would, timing it.

    Another checkout's alembic.ini runs that checkout's migrations and code.
    """
    environment = dict(os.environ, OUTBOX_DATABASE_URL=url, PYTHONPATH=str(alembic_ini.parent))
    alembic = str(Path(sys.executable).with_name("alembic"))
    start = time.perf_counter()
    done = subprocess.run(
        [alembic, "-c", str(alembic_ini), "upgrade", target],
        capture_output=True,
        text=True,
        env=environment,
        cwd=alembic_ini.parent,
        timeout=600,
        check=False,
    )
    return Upgrade(start, time.perf_counter(), done.returncode, done.stdout + done.stderr)


def stall_report(load: LiveLoad, upgrade: Upgrade) -> str:
    """The figures printed by the test (-s) and the bench."""
    start, end = upgrade.start, upgrade.end
    producer, worker = load.producer, load.worker
    return (
        f"upgrade {end - start:.1f} s; longest stall: producer "
        f"{producer.longest_within(start, end) * 1000:.0f} ms "
        f"({producer.count_within(start, end)} inserts), worker "
        f"{worker.longest_within(start, end) * 1000:.0f} ms "
        f"({worker.count_within(start, end) // 2} claims and records); of which waiting for "
        f"a lock: producer {producer.longest_lock_wait_within(start, end) * 1000:.0f} ms, "
        f"worker {worker.longest_lock_wait_within(start, end) * 1000:.0f} ms"
    )
