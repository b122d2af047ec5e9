"""What the demo prints: its introduction, and the summary checked against the sandbox."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from sqlalchemy import Engine

from models import Status
from sandbox.testing import RunningSandbox
from worker.demo import policy
from worker.demo.messages import CODES, INVALID_SQL_ROWS, Expected, UrgentCodes, special_counts
from worker.demo.reports import Delivery
from worker.ops import queries


def introduce(
    out: TextIO, root: Path, messages: int, api: str, environment: dict[str, str]
) -> None:
    special = sum(special_counts(messages).values())
    print("wiraya-outbox demo: the real worker and beat, no servers needed", file=out)
    print(f"  database  SQLite file {relative_to_cwd(root / 'outbox.db')}", file=out)
    broker = relative_to_cwd(root / "broker")
    print(f"  broker    kombu filesystem:// in {broker} (works across processes)", file=out)
    print(f"  API       sandbox at {api}: 5% of requests answered 503, 40 ms latency", file=out)
    print(
        f"  messages  a campaign of {messages:,} (bulk) of all four content types, "
        f"{INVALID_SQL_ROWS} invalid ones by plain SQL, {special} to test recipients that fail "
        f"or answer oddly; {CODES} urgent codes sent while it drains; one message for each "
        "rule of the sending policy",
        file=out,
    )
    faster = [f"{key}={value}" for key, value in environment.items() if "NOTIFY" not in key]
    print("  settings  faster than the defaults, to end in seconds:", file=out)
    for start in range(0, len(faster), 3):
        print("            " + "  ".join(faster[start : start + 3]), file=out)
    print(file=out)


def relative_to_cwd(path: Path) -> str:
    """``path`` from the working directory when it lies under it, else in full."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def status_table(out: TextIO, engine: Engine) -> None:
    with engine.begin() as connection:
        counts = queries.status_counts(connection)
    print("  " + "  ".join(f"{status} {count:,}" for status, count in counts.items()), file=out)


def summary(
    out: TextIO,
    engine: Engine,
    sandbox: RunningSandbox,
    expected: Expected,
    started: float,
    root: Path,
    delivered: Delivery,
    codes: UrgentCodes,
    quiet: policy.QuietHours,
) -> None:
    elapsed = time.monotonic() - started
    with engine.begin() as connection:
        by_type = queries.content_type_counts(connection)
        reasons = queries.failure_reasons(connection, limit=5)
        attempts = queries.total_attempts(connection)
    types = sorted({kind for kind, _ in by_type})
    columns = [Status.ACCEPTED, Status.FAILED, Status.PENDING, Status.SENDING]
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
    print(f"  delivery        {delivered.line(sandbox.service.reports)}", file=out)
    print(f"  urgent codes    {_codes_line(codes, elapsed)}", file=out)
    print(f"  time            {elapsed:.1f}s", file=out)
    policy.summary(out, engine, quiet)
    if reasons:
        print("\n  why messages failed:", file=out)
        for reason, count in reasons:
            print(f"    {count:>4,}  {reason}", file=out)
    _next_steps(out, root, expected)


def _codes_line(codes: UrgentCodes, elapsed: float) -> str:
    latencies = codes.latencies_ms()
    if not latencies:
        return "none accepted"
    middle = latencies[len(latencies) // 2]
    return (
        f"{len(latencies)} sent while the campaign drained, each accepted {latencies[0]:.0f}-"
        f"{latencies[-1]:.0f} ms after its commit (median {middle:.0f} ms), beside a campaign "
        f"that took {elapsed:.1f}s"
    )


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


def matches(engine: Engine, expected: Expected) -> bool:
    with engine.begin() as connection:
        counts = queries.status_counts(connection)
    accepted, failed = counts[Status.ACCEPTED], counts[Status.FAILED]
    return accepted == expected.accepted and failed == expected.failed


def _next_steps(out: TextIO, root: Path, expected: Expected) -> None:
    prefix = f"OUTBOX_DATABASE_URL=sqlite:///{relative_to_cwd(root / 'outbox.db')}"
    outbox = relative_to_cwd(Path(sys.executable).with_name("outbox"))
    examples = expected.examples
    print("\nWhat to try next (the demo's database stays in place):", file=out)
    print(f"  {prefix} {outbox} stats", file=out)
    for kind in ("blocked", "flaky"):
        if kind in examples:
            print(f"  {prefix} {outbox} inspect {examples[kind]}", file=out)
    print(f"  {prefix} {outbox} inspect demo-policy-quiet   # held by quiet hours", file=out)
    print(f"  {prefix} {outbox} retry --error 'gave up' --yes   # back to pending", file=out)
    print(f"  {prefix} {outbox} metrics --port 9808             # Prometheus figures", file=out)
    print("  the manual (make docs builds it into site/): docs/producing.md,", file=out)
    print("  docs/deployment.md, docs/operations.md, docs/runbook.md", file=out)
