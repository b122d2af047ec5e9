"""Footprint: the memory of the default worker (main and pool processes) and what a pool loads.

A backlog of due messages in a fresh PostgreSQL outbox is drained by the default worker and
beat (20 ms sandbox latency). While it drains, the memory of the worker's processes is sampled;
after it, each process's RSS and PSS are printed with their sums. PSS (Proportional Set Size,
from /proc/<pid>/smaps_rollup) splits each page among the processes that share it, so the pages
a pool process still shares with the main process since the fork count once in the sum; summed
RSS counts them once per process. Last, every pool process reports its sys.modules
(bench/footprint_app.py). It runs for `celery -A ... worker` and for
`outbox-celery -A ... worker` (worker/runtime/launch.py), which loads no `celery` plugins.

Run: .venv/bin/python bench/bench_footprint.py [--messages 5000] [--latency-ms 20]
(--messages 1000000 shows whether the memory stays flat over a large backlog.)
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import support
from celery import Celery

DATABASE = "outbox_bench_footprint"
TASK = "footprint.loaded_modules"  # bench/footprint_app.py (which needs the settings)
# What a pool process needs no part of: the operator's tools, the sandbox, the receiver's web
# stack and the servers behind Flower and the metrics endpoint.
NOT_FOR_DISPATCHING = (
    "flower",
    "tornado",
    "prometheus_client",
    "sandbox",
    "starlette",
    "uvicorn",
    "prompt_toolkit",
    "click_repl",
    "worker.ops.cli",
    "worker.reports",
)
LAUNCHERS = {
    "celery": [str(support.VENV_BIN / "celery")],
    "outbox-celery": [str(support.VENV_BIN / "outbox-celery")],
}


def memory_mib(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process in MiB, from smaps_rollup; (0, 0) when it is gone."""
    with suppress(OSError):
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        rss = re.search(r"^Rss:\s+(\d+) kB", text, re.M)
        pss = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
        if rss and pss:
            return int(rss.group(1)) / 1024, int(pss.group(1)) / 1024
    return 0.0, 0.0


def fill(url: str, messages: int) -> None:
    """``messages`` due rows in the outbox at ``url``."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            """
            INSERT INTO outbox_messages (client_message_id, recipient, content)
            SELECT 'footprint-' || g, '4670' || lpad((1000000 + g %% 8000000)::text, 7, '0'),
                   jsonb_build_object('$type', 'SMSProject', 'projectId', 123,
                                      'placeholders', jsonb_build_array('John', 'Order #' || g))
            FROM generate_series(1, %s) AS g
            """,
            (messages,),
        )
        connection.execute("VACUUM ANALYZE outbox_messages")


def finished(url: str) -> int:
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM outbox_messages WHERE status IN ('accepted', 'failed')"
        ).fetchone()
    return int(row[0]) if row else 0


@dataclass
class Footprint:
    """What one drain measured."""

    launcher: str
    seconds: float = 0.0
    processes: list[tuple[int, float, float]] = field(default_factory=list)  # pid, RSS, PSS
    samples: list[tuple[int, float, float]] = field(default_factory=list)  # done, RSS, PSS sums
    modules: dict[int, list[str]] = field(default_factory=dict)

    def report(self, messages: int) -> str:
        main, *pool = self.processes
        rss = sum(value for _, value, _ in self.processes)
        pss = sum(value for _, _, value in self.processes)
        per_pool_pss = statistics.median(value for _, _, value in pool) if pool else 0.0
        lines = [
            f"{self.launcher}: {messages:,} messages drained in {self.seconds:.1f} s; "
            f"after the drain PSS {pss:.0f} MiB in all (main {main[2]:.0f}, "
            f"pool " + " + ".join(f"{value:.0f}" for _, _, value in pool) + "), "
            f"RSS summed {rss:.0f} MiB (main {main[1]:.0f}, "
            f"pool " + " + ".join(f"{value:.0f}" for _, value, _ in pool) + "); "
            f"one more pool process costs about {per_pool_pss:.0f} MiB of PSS",
            "  during the drain (messages done: PSS / RSS summed, MiB): "
            + ", ".join(f"{done:,}: {p:.0f} / {r:.0f}" for done, r, p in self.samples),
        ]
        loaded = {name for names in self.modules.values() for name in names}
        union = sorted({name.split(".")[0] for name in loaded if not name.startswith("_")})
        unwanted = [name for name in NOT_FOR_DISPATCHING if name in loaded]
        lines.append(
            f"  top-level packages in the pool processes ({len(self.modules)} reported, "
            f"{len(union)} packages; not needed for dispatching: {', '.join(unwanted) or 'none'}"
            f"): {' '.join(union)}"
        )
        return "\n".join(lines)


def drain(launcher: str, messages: int, latency_ms: float) -> Footprint:
    """Drain ``messages`` with the default worker started through ``launcher``."""
    measured = Footprint(launcher)
    with ExitStack() as stack:
        url = stack.enter_context(support.scratch_database(DATABASE))
        fill(url, messages)
        redis = stack.enter_context(support.redis_server())
        sandbox = stack.enter_context(support.sandbox("--latency-ms", str(latency_ms)))
        env = support.outbox_env(url, redis.url, sandbox.url)
        command = LAUNCHERS[launcher]
        started = time.monotonic()
        worker = stack.enter_context(
            support.process("worker", [*command, "-A", "footprint_app", "worker"], env)
        )
        stack.enter_context(support.process("beat", [*command, "-A", "worker", "beat"], env))
        measured.samples = sample_until_drained(worker, url, messages)
        measured.seconds = time.monotonic() - started
        measured.processes = [(pid, *memory_mib(pid)) for pid in worker.tree()]
        measured.modules = pool_modules(redis.url, len(measured.processes) - 1)
    return measured


def sample_until_drained(
    worker: support.Process, url: str, messages: int
) -> list[tuple[int, float, float]]:
    """(messages done, RSS sum, PSS sum) about every tenth of the backlog, from the first
    message sent (the pool is up by then) to the end."""
    samples: list[tuple[int, float, float]] = []
    done = 0
    while done < messages:
        worker.check()
        time.sleep(0.5)
        done = finished(url)
        if done and (not samples or done >= samples[-1][0] + messages / 10 or done >= messages):
            sums = [memory_mib(pid) for pid in worker.tree()]
            samples.append((done, sum(r for r, _ in sums), sum(p for _, p in sums)))
    return samples


def pool_modules(broker: str, pool_size: int) -> dict[int, list[str]]:
    """Each pool process's modules, by pid: one held call per process, sent at once."""
    client = Celery("footprint", broker=broker, backend=broker)
    calls = [client.send_task(TASK, args=[2.0], queue="outbox") for _ in range(pool_size)]
    answers = [call.get(timeout=60) for call in calls]
    return {int(answer["pid"]): list(answer["modules"]) for answer in answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS), action="append")
    args = parser.parse_args()
    support.heading(
        f"footprint: the default worker after draining {args.messages:,} messages "
        f"(sandbox latency {args.latency_ms:g} ms)"
    )
    with open("/proc/loadavg") as loadavg:
        print(f"load average before: {loadavg.read().split(' ', 3)[:3]}", flush=True)
    for launcher in args.launcher or list(LAUNCHERS):
        print(drain(launcher, args.messages, args.latency_ms).report(args.messages), flush=True)


if __name__ == "__main__":
    main()
