"""Runs seeds: one database per process, reset between runs, and what each run came to.

``run(seed, database)`` replays exactly: the plan, the interleaving, every random draw and
every time come from the seed (row ids restart with every run). A failing run's report holds
the one command that replays it and the tail of its trace.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from alembic import command
from sqlalchemy import Engine, create_engine, event, text

from models.databases.sqlite import tune as tune_sqlite
from tests.conftest import POSTGRES_URL, alembic_config, with_database
from tests.conftest import _admin as admin
from tests.simulation.api_model import Request
from tests.simulation.faults import FaultPlan, known_defects, random_plan
from tests.simulation.properties import Violation, check_alarms_cleared, check_limits, finish
from tests.simulation.world import World
from worker.database import make_engine
from worker.settings import Settings

TABLES_KEPT = {"alembic_version"}
PG_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
PG_SEQUENCES = "SELECT sequencename FROM pg_sequences WHERE schemaname = current_schema()"
TRACE_SHOWN = 40
LIMIT_SETTLE = 30.0  # seconds to learn a lowered item limit


def liveness_bound(settings: Settings, messages: int) -> float:
    """Seconds from the API's return by which every sendable message must be accepted: a
    lease (a dead worker's rows), the longest backoff, two probe intervals (the circuit's
    cadence), a refused key's retry interval where the code has one, a poll, and the drain (a
    second per batch, at least a second per message under a rate)."""
    batches = -(-messages // settings.batch_size)
    rate = settings.configured_rate
    drain = max(batches, messages / rate if rate else 0.0) + 10.0
    fixed = settings.lease + settings.backoff_max + 2 * settings.probe_interval
    fixed += getattr(settings, "refused_key_retry", timedelta(0))
    return (fixed + settings.poll_interval).total_seconds() + drain


def poison_bound(settings: Settings) -> float:
    """Seconds from a poison message's arrival to `failed`: its lone sends with their backoffs."""
    each = settings.backoff_max + settings.wiraya_timeout + settings.lease
    return (each * settings.max_attempts + 2 * settings.probe_interval).total_seconds()


@dataclass
class RunResult:
    seed: int
    database: str
    plan: FaultPlan
    violations: list[Violation] = field(default_factory=list)
    trace: list[str] = field(default_factory=list)
    drain: float | None = None  # API's return -> last sendable message accepted
    poison_ends: dict[str, float] = field(default_factory=dict)  # kind -> seconds to failed
    ended_at: float = 0.0
    scenario: str | None = None  # a named plan's name (tests/simulation/scenarios.py)
    requests: list[Request] = field(default_factory=list)  # every request the API saw

    @property
    def clean(self) -> bool:
        return not self.violations

    def replay(self) -> str:
        named = f"SCENARIO={self.scenario} " if self.scenario else ""
        return f"make simulate {named}SEED={self.seed} DB={self.database}"

    def report(self, *, full: bool = False) -> str:
        """The violations, the replay command and the trace's tail (``full``: all it kept)."""
        lines = [f"seed {self.seed} on {self.database}: {len(self.violations)} violation(s)"]
        lines += [f"  {violation}" for violation in self.violations[:20]]
        lines.append(f"  replay: {self.replay()}")
        lines.append("  trace's tail:")
        lines += [
            f"    {line}" for line in self.trace[-(len(self.trace) if full else TRACE_SHOWN) :]
        ]
        return "\n".join(lines)


def run(
    seed: int, engine: Engine, plan: FaultPlan | None = None, *, scenario: str | None = None
) -> RunResult:
    """One seeded run on ``engine``'s database (emptied first): ``plan``, or the seed's own."""
    plan = plan or random_plan(seed, excluded=set(known_defects(engine.dialect.name)))
    reset(engine)
    world = World(seed, plan, engine)
    settings = world.settings
    within = poison_bound(settings)
    bound = max(liveness_bound(settings, plan.messages()), within)
    with world.hooked():
        world.spawn_all()
        try:
            last = max([plan.fault_end, *(arrival.at for arrival in plan.arrivals)])
            world.scheduler.run(until=last + bound, finished=world.all_final)
        finally:
            world.scheduler.close()
        ending = world.ending()
    finish(
        world.checker,
        ending,
        api_back=plan.fault_end,
        max_attempts=settings.max_attempts,
        poison_within=within,
    )
    check_limits(world.checker, settle=LIMIT_SETTLE, ended=world.clock.elapsed)
    check_alarms_cleared(world.checker, api_back=plan.fault_end)
    result = RunResult(seed, engine.dialect.name, plan, world.checker.violations)
    result.scenario = scenario
    result.trace = world.scheduler.lines()
    result.requests = list(world.api.requests)
    result.ended_at = world.clock.elapsed
    _figures(result, world, ending.rows)
    return result


def _figures(result: RunResult, world: World, rows: dict[str, dict[str, object]]) -> None:
    """The time from the API's return to the last sendable message accepted, and each poison
    message's time from arrival to `failed`."""
    back = result.plan.fault_end
    accepted = [
        entry.accepted_at
        for cmid, entry in world.api.ledger.items()
        if world.api.poison_of(cmid) is None and entry.accepted_at is not None
    ]
    if accepted:
        result.drain = max(0.0, max(accepted) - back)
    for cmid, arrived in world.arrivals.items():
        kind = world.api.poison_of(cmid)
        row = rows.get(cmid)
        if kind is not None and row is not None and row["status"] == "failed":
            ended = row["updated_at"] - world.clock.start  # type: ignore[operator]
            result.poison_ends[kind.value] = ended.total_seconds() - arrived


# -- databases ------------------------------------------------------------------------------


def reset(engine: Engine) -> None:
    """Every table emptied and its ids restarted, so that a seed replays the same ids."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # DELETE, not TRUNCATE: a few rows each, and TRUNCATE's locks cost more than that.
            names = connection.scalars(text(PG_TABLES))
            for name in sorted(set(names) - TABLES_KEPT):
                connection.execute(text(f'DELETE FROM "{name}"'))
            for sequence in connection.scalars(text(PG_SEQUENCES)).all():
                connection.execute(text(f'ALTER SEQUENCE "{sequence}" RESTART'))
            return
        names = connection.scalars(text("SELECT name FROM sqlite_master WHERE type = 'table'"))
        for name in sorted(set(names) - TABLES_KEPT):
            if not name.startswith("sqlite_"):
                connection.execute(text(f'DELETE FROM "{name}"'))
        if connection.scalar(
            text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'")
        ):
            connection.execute(text("DELETE FROM sqlite_sequence"))


@contextmanager
def database(kind: str) -> Iterator[Engine]:
    """A migrated outbox database of ``kind`` (sqlite or postgresql) for this process's runs."""
    if kind == "sqlite":
        # In memory when the machine has a tmpfs: the runs measure the code, not the disk.
        where = "/dev/shm" if Path("/dev/shm").is_dir() else None
        with tempfile.TemporaryDirectory(prefix="outbox-sim-", dir=where) as folder:
            url = f"sqlite:///{folder}/outbox.db"
            command.upgrade(alembic_config(url), "head")
            # Pooled, unlike a worker's (NullPool): a run opens thousands of connections.
            engine = create_engine(url, pool_size=10)
            event.listen(engine, "connect", tune_sqlite)
            # One connection held open keeps the WAL file: without it each last close
            # checkpoints and deletes it, and every statement pays for that.
            with engine.connect():
                yield engine
            engine.dispose()
        return
    name = f"outbox_sim_{os.getpid()}"
    admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin(f"CREATE DATABASE {name}")
    url = with_database(POSTGRES_URL, name)
    try:
        command.upgrade(alembic_config(url), "head")
        # No ping, no rollback on return: every statement of a run stands alone (autocommit)
        # or commits, and each round trip saved is a run sooner.
        engine = make_engine(url, pool_size=8, pool_pre_ping=False, pool_reset_on_return=None)
        try:
            yield engine
        finally:
            engine.dispose()
    finally:
        admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
