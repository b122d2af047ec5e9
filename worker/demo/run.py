"""`make demo` / `outbox demo`: the whole outbox on the embedded default, with no server to start.

- **Database:** a SQLite file, `.demo/outbox.db`, migrated with the real migrations.
- **Broker:** kombu's `filesystem://` transport in `.demo/broker/`. It is a real kombu transport
  that needs no server and, unlike `memory://`, works across processes: the worker and beat
  are separate processes, as in production, and share the queue through the folder.
- **API:** the sandbox on a free localhost port, in this process, with 5% of requests
  answered 503 and some latency, and test recipients that fail for good, fail transiently,
  or go missing from the results once.
- **Worker and beat:** real `celery -A worker worker` and `celery -A worker beat` processes.
- **Receiver:** a real `outbox receiver` process; the sandbox pushes it a delivery report for
  every message it accepts (`worker.demo.reports`), and the summary counts them.

What it sends is in `worker.demo.messages`: a bulk campaign, and while it drains a few
urgent verification codes that overtake it; `worker.demo.policy` adds one message for each
rule of the sending policy; what it prints is in `worker.demo.output`.

It enqueues the messages (most through the Python producer API, a few invalid ones by plain
SQL), shows a progress bar until every message is final, checks the outcome against what
the sandbox was told to do, and prints a summary. Ctrl-C stops everything and exits 130.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from sqlalchemy import Engine

from models import FINAL_STATUSES, Status
from sandbox.faults import Faults
from sandbox.testing import running_sandbox
from worker.clock import utc_now
from worker.database import make_engine
from worker.demo import policy
from worker.demo.messages import (
    CODES,
    INVALID_SQL_ROWS,
    UrgentCodes,
    enqueue_campaign,
    special_counts,
)
from worker.demo.output import introduce, matches, status_table, summary
from worker.demo.reports import Receiving, await_delivery, delivery
from worker.errors import ChildExited
from worker.ops import migrate as migration
from worker.ops import queries
from worker.ops.processes import Child, stop_all

TIMEOUT = timedelta(seconds=60)
REFRESH_SECONDS = 0.2
STOP_GRACE_SECONDS = 10.0
# Faster than the defaults so the demo ends in seconds; printed at the start.
DEMO_ENVIRONMENT = {
    "OUTBOX_POLL_INTERVAL_SECONDS": "0.2",
    "OUTBOX_BACKOFF_BASE_SECONDS": "0.5",
    "OUTBOX_BACKOFF_MAX_SECONDS": "4",
    "OUTBOX_MAX_ATTEMPTS": "4",
    "WIRAYA_TIMEOUT_SECONDS": "5",
    "OUTBOX_LEASE_SECONDS": "15",
    "OUTBOX_NOTIFY": "off",
}
FAULTS = Faults(p503=0.05, latency=timedelta(milliseconds=40))


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: stop the children, show what was done, exit 130."""


def run_demo(*, messages: int = 2000, folder: str | Path = ".demo") -> int:
    """Run the demo end to end; returns the exit code (0 when every message came out right)."""
    root = Path(folder).absolute()
    started = time.monotonic()
    out = sys.stdout
    previous = _interrupt_on_signals()
    engine: Engine | None = None
    try:
        with ExitStack() as stack:
            url = _prepare(root)
            engine = make_engine(url)
            stack.callback(engine.dispose)
            receiving = Receiving.choose()
            sandbox = stack.enter_context(
                running_sandbox(FAULTS, seed=7, reports=receiving.pushing())
            )
            quiet = policy.quiet_hours(utc_now())
            settings = {**DEMO_ENVIRONMENT, **policy.settings(quiet)}
            introduce(out, root, messages, sandbox.url, settings)
            # Celery starts while the messages go in: the worker sends as soon as it is up.
            environment = _environment(url, root, sandbox.url, settings)
            children = stack.enter_context(_celery(root, environment))
            receiving.start(children, environment, root)
            expected = enqueue_campaign(engine, messages)
            policy.enqueue_examples(engine, quiet)
            expected.accepted += CODES + policy.ACCEPTED
            expected.failed += policy.FAILED
            codes = UrgentCodes(engine)
            # The quiet-hours example stays pending until its window ends: not waited for.
            total = messages + INVALID_SQL_ROWS + CODES + policy.ACCEPTED + policy.FAILED
            finished = _watch(out, engine, started, total, children, codes)
            delivered = (
                await_delivery(engine, lambda: _check(children)) if finished else delivery(engine)
            )
            for child in children:
                child.terminate()  # their warm shutdown overlaps with the summary
            summary(out, engine, sandbox, expected, started, root, delivered, codes, quiet)
            undelivered = special_counts(messages)["undelivered"]
            if finished and not delivered.as_expected(expected.accepted, undelivered):
                print(
                    f"  expected        {undelivered} not delivered, the rest delivered", file=out
                )
                return 1
            if not finished:
                print(f"\nThe demo did not finish within {TIMEOUT.seconds}s.", file=out)
                print(f"Logs: {root / 'worker.log'}, {root / 'beat.log'}", file=out)
                return 1
            return 0 if matches(engine, expected) else 1
    except (KeyboardInterrupt, Interrupted):
        print("\n\nInterrupted: worker and beat stopped. What was done so far:", file=out)
        if engine is not None:
            status_table(out, engine)
        return 130
    except ChildExited as error:
        print(f"\n{error}", file=out)
        return 1
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _interrupt_on_signals() -> dict[int, Any]:
    """Ctrl-C and SIGTERM interrupt the demo; returns the handlers they replace.

    SIGINT gets an explicit handler too: a process started in the background of a
    non-interactive shell (CI, nohup) inherits SIGINT as ignored, and Python then
    raises no KeyboardInterrupt at all.
    """

    def stop(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    return {number: signal.signal(number, stop) for number in (signal.SIGINT, signal.SIGTERM)}


# Setting up -------------------------------------------------------------------------------------


def _prepare(root: Path) -> str:
    """A fresh folder with a migrated SQLite outbox; returns its URL."""
    for name in ("outbox.db", "outbox.db-wal", "outbox.db-shm", "worker.log", "beat.log"):
        (root / name).unlink(missing_ok=True)
    shutil.rmtree(root / "broker", ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{root / 'outbox.db'}"
    migration.migrate(url)
    return url


def _environment(
    url: str, root: Path, sandbox_url: str, settings: dict[str, str]
) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OUTBOX_", "WIRAYA_", "CELERY_"))
    }
    environment.update(settings)
    environment.update(
        OUTBOX_DATABASE_URL=url,
        CELERY_BROKER_URL="filesystem://",
        OUTBOX_BROKER_FOLDER=str(root / "broker"),
        WIRAYA_BASE_URL=sandbox_url,
        WIRAYA_API_KEY="demo-key",  # the sandbox takes any key; a real one never leaves here
    )
    return environment


# The worker and beat ----------------------------------------------------------------------------


def celery_command() -> list[str]:
    """`celery` from this interpreter's environment (the same program as on a server)."""
    script = Path(sys.executable).with_name("celery")
    return [str(script)] if script.exists() else [sys.executable, "-m", "celery"]


@contextmanager
def _celery(root: Path, environment: dict[str, str]) -> Iterator[list[Child]]:
    """`celery -A worker worker` (one process, as SQLite wants) and `celery -A worker beat`."""
    celery = celery_command()
    worker = [
        *celery,
        *("-A", "worker", "worker", "--pool", "solo", "--loglevel", "INFO"),
        # No other workers to meet or gossip with: skip those start-up rounds.
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
    ]
    beat = [*celery, "-A", "worker", "beat", "--loglevel", "INFO"]
    children = [
        Child(name, argv, root / f"{name}.log", environment, root)
        for name, argv in (("worker", worker), ("beat", beat))
    ]
    try:
        for child in children:
            child.start()
        yield children
    finally:
        stop_all(children, STOP_GRACE_SECONDS)


def _check(children: list[Child]) -> None:
    """ChildExited when one of them has exited on its own."""
    for child in children:
        child.check()


# Watching ---------------------------------------------------------------------------------------


def _watch(
    out: TextIO,
    engine: Engine,
    started: float,
    total: int,
    children: list[Child],
    codes: UrgentCodes,
) -> bool:
    """Draw the progress bar until no message is pending or sending; False on timeout. The
    urgent codes go in once a quarter of the campaign is done."""
    live = out.isatty()
    last_line = 0.0
    while True:
        for child in children:
            child.check()
        with engine.begin() as connection:
            figures = queries.queue_figures(connection, now=utc_now())
        counts = figures.by_status
        done = sum(counts[status] for status in FINAL_STATUSES)
        codes.send_when_due(done, total)
        elapsed = time.monotonic() - started
        accepted, failed = counts[Status.ACCEPTED], counts[Status.FAILED]
        line = _bar(done, total, accepted, figures.retrying, failed, elapsed)
        finished = done >= total
        if live:
            out.write("\r" + line)
            out.flush()
        elif finished or time.monotonic() - last_line >= 1.0:
            out.write(line + "\n")
            last_line = time.monotonic()
        if finished or elapsed > TIMEOUT.total_seconds():
            if live:
                out.write("\n")
            return finished
        time.sleep(REFRESH_SECONDS)


def _bar(done: int, total: int, accepted: int, retrying: int, failed: int, seconds: float) -> str:
    width = 30
    filled = int(width * done / total) if total else width
    bar = "█" * filled + "░" * (width - filled)
    return (
        f"[{bar}] {done:>5,}/{total:,}  accepted {accepted:>5,}  retrying {retrying:>3,}  "
        f"failed {failed:>3,}  {seconds:5.1f}s"
    )
