"""Start-up: from `celery -A worker worker` (and `beat`) to the first request the sandbox sees.

One message is pending in a fresh PostgreSQL outbox before anything starts; then the worker
and beat are started together, as a deployment starts them, with the default settings and
the default pool. The figure is the time from launching the worker to the sandbox's first
receipt of that message (its ledger's `first_received`): imports, the broker connection,
the pool, beat's first look for due rows and the dispatch all included. Several rounds, each
on a fresh database, Redis and sandbox; min, median and max are printed, and the CPU time the
worker (all its processes) and beat had used by then: on a shared machine the wall time varies
with the load, the CPU time much less.

Each round runs once through `celery` and once through `outbox-celery` (worker/runtime/launch.py,
Celery's worker and beat commands without the plugins of the `celery` command).

Run: .venv/bin/python bench/bench_startup.py [--rounds 5] [--launcher celery|outbox-celery]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from contextlib import ExitStack
from datetime import UTC, datetime

import support
from sqlalchemy.orm import Session

from models import SMSProject, enqueue
from sandbox.testing import SandboxAdmin
from worker.database import make_engine

DATABASE = "outbox_bench_startup"
MESSAGE = "startup-000001"


def pending_message(url: str) -> None:
    """The one message the started worker must send."""
    engine = make_engine(url)
    with Session(engine) as session, session.begin():
        content = SMSProject(project_id=123, placeholders=["John", "Order #1"])
        enqueue(session, recipient="46701234567", content=content, client_message_id=MESSAGE)
    engine.dispose()


LAUNCHERS = {"celery": "celery", "outbox-celery": "outbox-celery"}  # the command, in .venv/bin


def one_round(launcher: str) -> tuple[float, float, float]:
    """Seconds from launching the worker to the sandbox's first request; worker and beat CPU."""
    with ExitStack() as stack:
        url = stack.enter_context(support.scratch_database(DATABASE))
        redis = stack.enter_context(support.redis_server())
        sandbox = stack.enter_context(support.sandbox())
        pending_message(url)
        env = support.outbox_env(url, redis.url, sandbox.url)
        celery = str(support.VENV_BIN / LAUNCHERS[launcher])
        launched = datetime.now(UTC)
        worker = stack.enter_context(
            support.process("worker", [celery, "-A", "worker", "worker"], env)
        )
        beat = stack.enter_context(support.process("beat", [celery, "-A", "worker", "beat"], env))
        admin = SandboxAdmin(sandbox.url)
        support.wait_for(lambda: MESSAGE in admin.ledger(), timeout=60, what="the first request")
        worker_cpu = sum(support.cpu_seconds(pid) for pid in worker.tree())
        beat_cpu = support.cpu_seconds(beat.pid)
        seconds = (admin.ledger()[MESSAGE].first_received - launched).total_seconds()
        return seconds, worker_cpu, beat_cpu


def import_seconds() -> float:
    """Seconds a fresh interpreter takes to import the Celery app and its tasks."""
    code = "import worker.runtime.tasks"
    env = support.outbox_env("sqlite:///unused.db", "redis://127.0.0.1:1/0", "http://127.0.0.1:1")
    started = time.monotonic()
    python = str(support.VENV_BIN / "python")
    subprocess.run([python, "-c", code], check=True, cwd=support.ROOT, env=env)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS), action="append")
    args = parser.parse_args()
    launchers = args.launcher or list(LAUNCHERS)
    support.heading(
        "start-up: `<launcher> -A worker worker` and `beat` launched together, one message "
        "pending; time to the sandbox's first request (default settings, default pool)"
    )
    with open("/proc/loadavg") as loadavg:
        print(f"load average before: {' '.join(loadavg.read().split()[:3])}", flush=True)
    # Rounds alternate between the launchers, so that a change in the machine's load falls
    # on all of them alike.
    rounds: dict[str, list[tuple[float, float, float]]] = {name: [] for name in launchers}
    for _ in range(args.rounds):
        for launcher in launchers:
            rounds[launcher].append(one_round(launcher))
    for launcher, measured in rounds.items():
        report(launcher, measured)
    with open("/proc/loadavg") as loadavg:
        print(f"load average after: {' '.join(loadavg.read().split()[:3])}", flush=True)
    print(f"importing the app and its tasks: {import_seconds():.2f} s", flush=True)


def report(launcher: str, rounds: list[tuple[float, float, float]]) -> None:
    """The wall-time and CPU figures of one launcher's rounds."""
    seconds = [wall for wall, _, _ in rounds]
    print(
        f"{launcher}: start to first request: median {statistics.median(seconds):.2f} s, "
        f"min {min(seconds):.2f} s, max {max(seconds):.2f} s ({len(rounds)} rounds: "
        + ", ".join(f"{value:.2f}" for value in seconds)
        + ")",
        flush=True,
    )
    worker_cpu = statistics.median(cpu for _, cpu, _ in rounds)
    beat_cpu = statistics.median(cpu for _, _, cpu in rounds)
    print(
        f"{launcher}: CPU used by then (median): worker {worker_cpu:.2f} s "
        f"(main and pool processes), beat {beat_cpu:.2f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
