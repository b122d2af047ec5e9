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
  every message it accepts (`worker.ops.delivery_demo`), and the summary counts them.

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
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from models import SMSFromAlpha, SMSProject, VoiceProject, WhatsappProject, enqueue_many
from sandbox.faults import Faults
from sandbox.testing import RunningSandbox, running_sandbox
from worker.database import make_engine
from worker.ops import migrate as migration
from worker.ops import queries
from worker.ops.delivery_demo import Delivery, Receiving, await_delivery, delivery
from worker.ops.processes import Child, ChildExited, stop_all

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

# Test recipients (sandbox/recipients.py): the last seven digits choose the sandbox's answer.
SPECIAL = {
    # prefix: (recipient, how many per 2,000, what becomes of them)
    "blocked": ("46700000001", 12, "failed"),  # permanent failure, never resent
    "flaky": ("46700000002", 16, "accepted"),  # transient twice, accepted on the third try
    "down": ("46700000003", 6, "failed"),  # transient for ever: failed after 4 attempts
    "lost": ("46700000004", 10, "accepted"),  # missing from results once, resent, same id
    "undelivered": ("46700000007", 20, "accepted"),  # its delivery report says NOT_DELIVERED
}
# Inserted by plain SQL, skipping the producer's checks: each fails alone, never sent.
INVALID_CONTENTS = [
    '{"$type": "SMSFromAlpha", "sender": "MuchTooLongSenderName", "text": "Hello"}',
    '{"$type": "CarrierPigeon", "projectId": 7, "placeholders": []}',
    '{"$type": "SMSProject", "projectId": "12", "placeholders": ["Alva"]}',
    '{"$type": "WhatsappProject", "projectId": 7, "placeholders": ["Alva", 42]}',
]
INVALID_SQL_ROWS = len(INVALID_CONTENTS)
INVALID_INSERT = """
INSERT INTO outbox_messages (client_message_id, recipient, content)
VALUES (:client_message_id, '46701234599', :content)
"""
NAMES = ["Alva", "Elias", "Maja", "Noah", "Ella", "Hugo", "Astrid", "Liam", "Saga", "Oscar"]


@dataclass
class Expected:
    """What every message should become, by client_message_id prefix."""

    accepted: int = 0
    failed: int = 0
    examples: dict[str, str] = field(default_factory=dict)


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
                running_sandbox(FAULTS, seed=7, callbacks=receiving.pushing())
            )
            _introduce(out, root, messages, sandbox.url)
            # Celery starts while the messages go in: the worker sends as soon as it is up.
            environment = _environment(url, root, sandbox.url)
            children = stack.enter_context(_celery(root, environment))
            receiving.start(children, environment, root)
            expected = _enqueue(engine, messages)
            finished = _watch(out, engine, started, messages + INVALID_SQL_ROWS, children)
            delivered = (
                await_delivery(engine, lambda: _check(children)) if finished else delivery(engine)
            )
            for child in children:
                child.terminate()  # their warm shutdown overlaps with the summary
            _summary(out, engine, sandbox, expected, started, root, delivered)
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
            return 0 if _matches(engine, expected) else 1
    except (KeyboardInterrupt, Interrupted):
        print("\n\nInterrupted: worker and beat stopped. What was done so far:", file=out)
        if engine is not None:
            _status_table(out, engine)
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


def _enqueue(engine: Engine, messages: int) -> Expected:
    """Insert the sample messages in one transaction; returns what each should become."""
    expected = Expected()
    rows: list[dict[str, Any]] = []
    for prefix, count in special_counts(messages).items():
        recipient, _, outcome = SPECIAL[prefix]
        for number in range(1, count + 1):
            client_message_id = f"demo-{prefix}-{number:03d}"
            rows.append(_message(len(rows), client_message_id, recipient))
            setattr(expected, outcome, getattr(expected, outcome) + 1)
        if count:
            expected.examples[prefix] = f"demo-{prefix}-001"
    while len(rows) < messages:
        number = len(rows)
        rows.append(_message(number, f"demo-{number:05d}", f"4670{1_000_000 + number:07d}"))
        expected.accepted += 1
    # Interleave the special messages with the others, as real traffic would be.
    rows.sort(key=lambda row: zlib.crc32(row["client_message_id"].encode()))
    with Session(engine) as session, session.begin():
        enqueue_many(session, rows)
        for number, content in enumerate(INVALID_CONTENTS, start=1):
            values = {"client_message_id": f"demo-invalid-{number:03d}", "content": content}
            session.execute(text(INVALID_INSERT), values)
    expected.failed += INVALID_SQL_ROWS
    expected.examples["invalid"] = "demo-invalid-001"
    return expected


def special_counts(messages: int) -> dict[str, int]:
    """How many messages go to each kind of test recipient: SPECIAL's shares, scaled."""
    counts: dict[str, int] = {}
    for prefix, (_, per_2000, _) in SPECIAL.items():
        room = max(messages - sum(counts.values()) - 1, 0)  # leave at least one ordinary
        counts[prefix] = min(max(1, round(per_2000 * messages / 2000)), room)
    return counts


def _message(number: int, client_message_id: str, recipient: str) -> dict[str, Any]:
    name = NAMES[number % len(NAMES)]
    kind = number % 4
    content: SMSProject | WhatsappProject | VoiceProject | SMSFromAlpha
    if kind == 0:
        content = SMSProject(project_id=123, placeholders=[name, f"Order #{5000 + number}"])
    elif kind == 1:
        content = WhatsappProject(project_id=789, placeholders=[name, "Delivery on Monday"])
    elif kind == 2:
        content = VoiceProject(project_id=456, placeholders=[name, f"{8 + number % 9}:30"])
    else:
        content = SMSFromAlpha(sender="Wiraya", text=f"Hi {name}, your code is {number:06d}")
    return {"client_message_id": client_message_id, "recipient": recipient, "content": content}


def _environment(url: str, root: Path, sandbox_url: str) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OUTBOX_", "WIRAYA_", "CELERY_"))
    }
    environment.update(DEMO_ENVIRONMENT)
    environment.update(
        OUTBOX_DATABASE_URL=url,
        CELERY_BROKER_URL="filesystem://",
        OUTBOX_BROKER_FOLDER=str(root / "broker"),
        WIRAYA_BASE_URL=sandbox_url,
        WIRAYA_API_KEY="demo-key",  # the sandbox takes any key; a real one never leaves here
    )
    return environment


def _introduce(out: TextIO, root: Path, messages: int, api: str) -> None:
    special = sum(special_counts(messages).values())
    print("wiraya-outbox demo: the real worker and beat, no servers needed", file=out)
    print(f"  database  SQLite file {_shown(root / 'outbox.db')}", file=out)
    print(
        f"  broker    kombu filesystem:// in {_shown(root / 'broker')} (works across processes)",
        file=out,
    )
    print(f"  API       sandbox at {api}: 5% of requests answered 503, 40 ms latency", file=out)
    print(
        f"  messages  {messages:,} of all four content types, {INVALID_SQL_ROWS} invalid ones "
        f"by plain SQL, {special} to test recipients that fail or answer oddly",
        file=out,
    )
    faster = [f"{key}={value}" for key, value in DEMO_ENVIRONMENT.items() if "NOTIFY" not in key]
    print("  settings  faster than the defaults, to end in seconds:", file=out)
    for start in range(0, len(faster), 3):
        print("            " + "  ".join(faster[start : start + 3]), file=out)
    print(file=out)


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


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


def _watch(out: TextIO, engine: Engine, started: float, total: int, children: list[Child]) -> bool:
    """Draw the progress bar until no message is pending or sending; False on timeout."""
    live = out.isatty()
    last_line = 0.0
    while True:
        for child in children:
            child.check()
        with engine.begin() as connection:
            figures = queries.queue_figures(connection, now=datetime.now(UTC))
        counts = figures.by_status
        done = counts["accepted"] + counts["failed"] + counts["cancelled"]
        elapsed = time.monotonic() - started
        line = _bar(done, total, counts["accepted"], figures.retrying, counts["failed"], elapsed)
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


# Reporting --------------------------------------------------------------------------------------


def _status_table(out: TextIO, engine: Engine) -> None:
    with engine.begin() as connection:
        counts = queries.status_counts(connection)
    print("  " + "  ".join(f"{status} {count:,}" for status, count in counts.items()), file=out)


def _summary(
    out: TextIO,
    engine: Engine,
    sandbox: RunningSandbox,
    expected: Expected,
    started: float,
    root: Path,
    delivered: Delivery,
) -> None:
    elapsed = time.monotonic() - started
    with engine.begin() as connection:
        by_type = queries.content_type_counts(connection)
        reasons = queries.failure_reasons(connection, limit=5)
        attempts = queries.total_attempts(connection)
    types = sorted({kind for kind, _ in by_type})
    columns = ["accepted", "failed", "pending", "sending"]
    print(file=out)
    print(
        f"{'content type':<16}" + "".join(f"{name:>10}" for name in columns) + f"{'total':>10}",
        file=out,
    )
    totals = dict.fromkeys(columns, 0)
    for kind in types:
        row = {name: by_type.get((kind, name), 0) for name in columns}
        for name in columns:
            totals[name] += row[name]
        print(
            f"{kind:<16}"
            + "".join(f"{row[n]:>10,}" for n in columns)
            + f"{sum(row.values()):>10,}",
            file=out,
        )
    print(
        f"{'all':<16}"
        + "".join(f"{totals[n]:>10,}" for n in columns)
        + f"{sum(totals.values()):>10,}",
        file=out,
    )
    stats = sandbox.stats()
    ledger = sandbox.ledger()
    resent = sum(1 for entry in ledger.values() if entry.times_received > 1)
    requests = stats.get("requests", 0)
    unavailable = stats.get("by_status", {}).get("503", 0)
    print(file=out)
    print(f"  expected        {expected.accepted:,} accepted, {expected.failed:,} failed", file=out)
    print(
        f"  API requests    {requests:,} ({unavailable} answered 503 on purpose), "
        f"{attempts:,} message sends",
        file=out,
    )
    print(f"  resent          {resent:,} messages, each under its own clientMessageId", file=out)
    print(f"  tracking ids    {_tracking_check(engine, sandbox)}", file=out)
    print(f"  delivery        {delivered.line(sandbox.service.callbacks)}", file=out)
    print(f"  time            {elapsed:.1f}s", file=out)
    if reasons:
        print("\n  why messages failed:", file=out)
        for reason, count in reasons:
            print(f"    {count:>4,}  {reason}", file=out)
    _next_steps(out, root, expected)


def _tracking_check(engine: Engine, sandbox: RunningSandbox) -> str:
    """Every accepted row holds the tracking id the API gave it, and nothing was enqueued twice."""
    ledger = sandbox.ledger()
    with engine.begin() as connection:
        accepted = queries.accepted_tracking_ids(connection)
    wrong = sum(
        1
        for cid, tracking in accepted.items()
        if (entry := ledger.get(cid)) is None or entry.tracking_id != tracking
    )
    if wrong:
        return f"{wrong} accepted messages do not match the API's ledger"
    return f"all {len(accepted):,} match the API's ledger (exactly once in effect)"


def _matches(engine: Engine, expected: Expected) -> bool:
    with engine.begin() as connection:
        counts = queries.status_counts(connection)
    return counts["accepted"] == expected.accepted and counts["failed"] == expected.failed


def _next_steps(out: TextIO, root: Path, expected: Expected) -> None:
    prefix = f"OUTBOX_DATABASE_URL=sqlite:///{_shown(root / 'outbox.db')}"
    outbox = _shown(Path(sys.executable).with_name("outbox"))
    examples = expected.examples
    print("\nWhat to try next (the demo's database stays in place):", file=out)
    print(f"  {prefix} {outbox} stats", file=out)
    for kind in ("blocked", "flaky"):
        if kind in examples:
            print(f"  {prefix} {outbox} inspect {examples[kind]}", file=out)
    print(f"  {prefix} {outbox} retry --error 'gave up' --yes   # back to pending", file=out)
    print(f"  {prefix} {outbox} metrics --port 9808             # Prometheus figures", file=out)
    print("  README.md: producing messages, deployment (docker compose), Flower, runbook", file=out)
