"""What every benchmark shares: the machine's description, databases, and the processes it runs.

Processes are started as a user starts them (`redis-server`, `python -m sandbox`,
`celery -A worker worker|beat`), each in its own process group with its output in a log file,
and stopped (or killed) when the `with` block ends, whatever happened inside it.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config

from worker.ops.processes import Child, free_port, wait_for

__all__ = ["wait_for"]  # the one wait_for, for the benchmarks

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SERVER_URL = os.environ.get(
    "OUTBOX_BENCH_POSTGRES_URL",
    os.environ.get("OUTBOX_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
)
# The children's logs: a folder per benchmark run, so that runs at the same time (another
# checkout's) never write into each other's logs.
LOGS = Path(os.environ.get("OUTBOX_BENCH_LOGS") or tempfile.mkdtemp(prefix="outbox-bench-logs-"))


# -- reporting -----------------------------------------------------------------------------------


def machine() -> str:
    """CPU model, cores, memory, and the versions that shape the figures."""
    cpu = _first_match(Path("/proc/cpuinfo"), r"model name\s*:\s*(.+)") or platform.processor()
    memory_kib = _first_match(Path("/proc/meminfo"), r"MemTotal:\s*(\d+) kB")
    memory = f"{int(memory_kib) / 1024 / 1024:.1f} GiB" if memory_kib else "?"
    with admin_connection() as connection:
        postgres = connection.execute("SHOW server_version").fetchone()
    redis = _version([shutil.which("redis-server") or "redis-server", "--version"], r"v=(\S+)")
    return (
        f"machine: {cpu}, {os.cpu_count()} cores, {memory} RAM, {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}, "
        f"PostgreSQL {postgres[0] if postgres else '?'}, Redis {redis}"
    )


def load_average() -> str:
    """The machine's load averages over 1, 5 and 15 minutes (other work shares the cores)."""
    with suppress(OSError):
        one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
        return f"load average: {one} {five} {fifteen} (1, 5, 15 min)"
    return "load average: ?"


def heading(title: str) -> None:
    print(f"\n== {title} ==\n{machine()}", flush=True)


def _first_match(path: Path, pattern: str) -> str | None:
    with suppress(OSError):
        found = re.search(pattern, path.read_text())
        return found.group(1).strip() if found else None
    return None


def _version(argv: list[str], pattern: str) -> str:
    with suppress(OSError):
        output = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        found = re.search(pattern, output)
        return found.group(1) if found else "?"
    return "?"


# -- PostgreSQL ----------------------------------------------------------------------------------


def database_url(name: str) -> str:
    """The SQLAlchemy URL of database ``name`` on the benchmark server."""
    return SERVER_URL.rsplit("/", 1)[0] + "/" + name


def admin_connection() -> psycopg.Connection[Any]:
    dsn = SERVER_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


def create_database(name: str, *, template: str | None = None) -> str:
    """A new database (dropped first if left over), migrated unless copied from ``template``."""
    drop_database(name)
    with admin_connection() as connection:
        suffix = f" TEMPLATE {template}" if template else ""
        connection.execute(f"CREATE DATABASE {name}{suffix}")  # type: ignore[arg-type]
        if template:
            # The copy's pages reach the disk now, not during the drain timed next, and every
            # run starts as soon after a checkpoint as the others: none falls inside one timed
            # run and not another, and each pays the full-page writes that follow one alike.
            connection.execute("CHECKPOINT")
    url = database_url(name)
    if template is None:
        migrate(url)
    return url


def migrate(url: str) -> None:
    """`alembic upgrade head` on ``url``."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", url)
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


def drop_database(name: str) -> None:
    with admin_connection() as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]


@contextmanager
def scratch_database(name: str, *, template: str | None = None) -> Iterator[str]:
    """A database for the length of the block."""
    url = create_database(name, template=template)
    try:
        yield url
    finally:
        drop_database(name)


@contextmanager
def scratch_sqlite() -> Iterator[str]:
    """A migrated SQLite outbox file for the length of the block."""
    with tempfile.TemporaryDirectory(prefix="outbox-bench-") as folder:
        url = f"sqlite:///{folder}/outbox.db"
        migrate(url)
        yield url


# -- processes -----------------------------------------------------------------------------------


Process = Child  # a child in its own group; ``log`` holds its output, ``url`` where it serves


@contextmanager
def process(name: str, argv: list[str], env: dict[str, str] | None = None) -> Iterator[Process]:
    """Run ``argv`` for the length of the block (stopped, or killed, when it ends)."""
    log = LOGS / f"{name}.log"
    log.unlink(missing_ok=True)  # each run's log starts empty
    with Child(name, argv, log, env, ROOT) as child:
        yield child


@contextmanager
def redis_server() -> Iterator[Process]:
    """A private redis-server without persistence."""
    port = free_port()
    argv = [shutil.which("redis-server") or "redis-server", "--port", str(port)]
    argv += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with process("redis", argv) as redis:
        redis.url = f"redis://127.0.0.1:{port}/0"
        redis.wait_for_log(r"Ready to accept connections", timeout=10)
        yield redis


@contextmanager
def sandbox(*flags: str) -> Iterator[Process]:
    """The sandbox as its own process (`python -m sandbox`)."""
    port = free_port()
    argv = [sys.executable, "-m", "sandbox", "--port", str(port), *flags]
    with process("sandbox", argv) as server:
        server.url = f"http://127.0.0.1:{port}"
        server.wait_for_log(r"sandbox listening", timeout=10)
        yield server


def outbox_env(database: str, broker: str, api: str, **settings: str) -> dict[str, str]:
    """The environment of a worker or beat: the contract's variables, nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTBOX_", "WIRAYA_"))}
    env.update(
        OUTBOX_DATABASE_URL=database,
        CELERY_BROKER_URL=broker,
        WIRAYA_BASE_URL=api,
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "bench")]),
    )
    env.update(settings)
    return env


@contextmanager
def celery_worker(
    env: dict[str, str], *, concurrency: int | None, app: str = "worker", name: str = "worker"
) -> Iterator[Process]:
    """`outbox-celery -A <app> worker [--concurrency N]` (as the image runs it) at its default
    log level, ready in the block."""
    argv = [str(VENV_BIN / "outbox-celery"), "-A", app, "worker", "-n", f"{name}@%h"]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    with process(name, argv, env) as worker:
        # At the default level (warning) celery does not log "ready": ask it over the broker.
        ping = [str(VENV_BIN / "celery"), "-A", app, "inspect", "ping", "--timeout", "1"]
        ping += ["-d", f"{name}@{socket.gethostname()}"]

        def answers() -> bool:
            worker.check()
            done = subprocess.run(ping, env=env, cwd=ROOT, capture_output=True, check=False)
            return done.returncode == 0

        wait_for(answers, timeout=60, what=f"{name} to answer a ping")
        yield worker


@contextmanager
def celery_beat(env: dict[str, str]) -> Iterator[Process]:
    """`outbox-celery -A worker beat` with the outbox's scheduler, as the image runs it."""
    argv = [str(VENV_BIN / "outbox-celery"), "-A", "worker", "beat", "-l", "info"]
    with process("beat", argv, env) as beat:
        beat.wait_for_log(r"beat: Starting", timeout=60)
        yield beat


# -- where the CPU went -------------------------------------------------------------------------


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of one process so far (0 when it is gone)."""
    with suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return 0.0


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLOCK_TICKS, sum(values) / CLOCK_TICKS


def postgres_backends(database: str) -> list[int]:
    """Server processes serving ``database`` now."""
    with admin_connection() as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    return [int(row[0]) for row in rows]


class CpuMeter:
    """CPU seconds used by groups of processes between its creation and ``used()``."""

    def __init__(self, **groups: Callable[[], list[int]]) -> None:
        self.groups = groups
        self.start = {pid: cpu_seconds(pid) for pids in groups.values() for pid in pids()}
        self.machine_start = machine_busy()

    def used(self) -> dict[str, float]:
        """Seconds per group, and the machine's busy share over the interval."""
        used = {
            name: sum(cpu_seconds(pid) - self.start.get(pid, 0.0) for pid in pids())
            for name, pids in self.groups.items()
        }
        busy, total = machine_busy()
        cores = os.cpu_count() or 1
        elapsed = (total - self.machine_start[1]) / cores
        used["machine busy %"] = 100 * (busy - self.machine_start[0]) / cores / max(elapsed, 1e-9)
        return used


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    rank = max(1, round(fraction * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]
