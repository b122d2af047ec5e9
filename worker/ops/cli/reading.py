"""`outbox stats` and `outbox inspect`: what the outbox holds, printed as a table or JSON."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta
from typing import Any

from models import Status
from models.text import escaped
from worker.database import database_now
from worker.dispatch.gate import KeyState, read_keys
from worker.errors import OperatorError
from worker.ops import access, queries
from worker.ops import snapshot as snapshots
from worker.ops.cli.tenant_view import own_key, print_tenant
from worker.ops.cli.times import human_duration
from worker.ops.policy_figures import policy_figures, rule_of
from worker.ops.snapshot import Snapshot
from worker.ops.tenant_figures import COUNTED, tenant_figures
from worker.reports import figures as report_figures
from worker.settings import OperatorSettings


def cmd_stats(args: argparse.Namespace, settings: OperatorSettings) -> int:
    if getattr(args, "tenant", False):
        return _tenant_stats(args, settings)
    with access.open_outbox(settings.database_url) as engine:
        snapshot = snapshots.take_snapshot(
            engine,
            now=database_now(engine),
            circuit_failures=settings.circuit_failures,
            exact_below=None if args.exact else queries.EXACT_BELOW,
        )
        delivery = report_figures.delivery_figures(engine)
        with engine.connect() as connection:
            policy = policy_figures(connection, snapshot.taken_at)
    if args.json:
        figures = {"delivery": delivery.to_json(), "policy": policy.to_json()}
        print(json.dumps({**snapshot.to_json(), **figures}, indent=2))
        return 0
    print(f"outbox at {access.shown_url(settings.database_url)}")
    print()
    _print_statuses(snapshot)
    print()
    _print_lanes(snapshot)
    print()
    age = snapshot.oldest_due_age
    print(f"  oldest due   {'-' if age is None else human_duration(age)} (since its due time)")
    print(f"  dispatch     {snapshot.gate.describe()}")
    _print_keys(snapshot.keys)
    print("\n".join(policy.lines()))
    print()
    print("delivery (accepted messages by their latest report)")
    print("\n".join(delivery.lines()))
    if snapshot.failure_reasons:
        print()
        print(f"top failure reasons (of the latest {snapshots.REASONS_AMONG:,} failures)")
        for reason, count in snapshot.failure_reasons:
            print(f"  {count:>8,}  {escaped(reason)}")
    return 0


def _tenant_stats(args: argparse.Namespace, settings: OperatorSettings) -> int:
    """`outbox stats --tenant`: one line a tenant ("" is the default tenant)."""
    with access.open_outbox(settings.database_url) as engine, engine.connect() as connection:
        now = database_now(engine)
        lines = tenant_figures(connection, now)
        keys = read_keys(connection, now)
    if args.json:
        shown = []
        for line in lines:
            key = own_key(line.tenant, keys)
            shown.append({**line.to_json(), "key": None if key is None else key.to_json()})
        print(json.dumps(shown, indent=2))
        return 0
    heads = "".join(f"{status.value:>10}" for status in COUNTED)
    print(f"  {'tenant':<20}{heads}{'due':>10}  oldest due")
    for line in lines:
        counts = "".join(f"{line.counts[status.value]:>10,}" for status in COUNTED)
        age = "-" if line.oldest_due_at is None else human_duration(now - line.oldest_due_at)
        name = escaped(line.tenant) or "''"  # the default tenant
        print(f"  {name:<20}{counts}{line.due:>10,}  {age}")
    _print_keys(keys)
    return 0


def _print_keys(keys: list[KeyState]) -> None:
    """Each tenant's own key a brake of its own holds: its 429 pause, its learnt rate."""
    for key in keys:
        if key.in_force:
            print(f"  {escaped(key.named)}: {escaped(key.describe())}")


def _print_statuses(snapshot: Snapshot) -> None:
    figures = snapshot.figures
    counts = figures.by_status
    scheduled = sum(lane.scheduled for lane in figures.lanes.values())
    notes = {
        Status.PENDING.value: (
            f"{figures.due_now - figures.expired_leases} due now, {scheduled} scheduled, "
            f"{figures.retrying} retrying"
        ),
        Status.SENDING.value: (
            f"{figures.leases_in_flight} leases in flight, {figures.expired_leases} expired"
        ),
    }
    for status in figures.estimated:
        notes[status] = "the planner's estimate; `outbox stats --exact` counts them"
    for status in Status:
        mark = "~" if status.value in figures.estimated else ""
        note = notes.get(status.value)
        print(
            f"  {status.value:<10} {mark + format(counts[status.value], ','):>12}"
            + (f"   ({note})" if note else "")
        )
    total = format(sum(counts.values()), ",")
    print(f"  {'total':<10} {('~' if figures.estimated else '') + total:>12}")


def _print_lanes(snapshot: Snapshot) -> None:
    print(
        f"  {'lane':<8} {'pending':>10} {'due':>10} {'scheduled':>10}  {'oldest due':<12} next due"
    )
    for name, lane in snapshot.figures.lanes.items():
        age = snapshot.due_age(lane)
        print(
            f"  {name:<8} {lane.pending:>10,} {lane.due:>10,} {lane.scheduled:>10,}  "
            f"{'-' if age is None else human_duration(age):<12} "
            f"{_in(lane.next_due_at, snapshot.taken_at)}"
        )


def _in(moment: datetime | None, now: datetime) -> str:
    return "-" if moment is None else f"in {human_duration(max(moment - now, timedelta(0)))}"


def cmd_inspect(args: argparse.Namespace, settings: OperatorSettings) -> int:
    tenant = getattr(args, "tenant", None)
    if args.client_message_id is None:
        if tenant is None:
            raise OperatorError("inspect: give a CLIENT_MESSAGE_ID or --tenant NAME", 2)
        return print_tenant(settings, tenant, args.json)
    with access.open_outbox(settings.database_url) as engine:
        row = snapshots.find_message(engine, args.client_message_id)
        reports = report_figures.message_reports(engine, row["tracking_id"])
    if tenant is not None and row["tenant"] != tenant:
        whose = f"tenant {row['tenant']!r}'s" if row["tenant"] else "the default tenant's"
        raise OperatorError(
            f"message {args.client_message_id!r} is not tenant {tenant!r}'s (it is {whose})"
        )
    shown = {key: _jsonable(value) for key, value in row.items()}
    shown["policy"] = rule_of(row.get("last_error"), row.get("next_attempt_at"))
    listed = [{key: _jsonable(value) for key, value in report.items()} for report in reports]
    if args.json:
        document = json.dumps({**shown, "delivery_reports": listed}, indent=2, ensure_ascii=False)
        # json escapes C0 controls; the other characters a terminal obeys, inside strings.
        print("\n".join(escaped(line) for line in document.split("\n")))
        return 0
    width = max(len(key) for key in shown)
    for key, value in shown.items():
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value
        print(f"{key:<{width}}  {'-' if text is None else escaped(str(text))}")
    print(f"\ndelivery reports ({len(listed)})")
    for report in listed:
        print(
            f"  {escaped(report['status']):<16} done {report['done_at'] or '-'}  received "
            f"{report['received_at']}  {escaped(report['report'])}"
        )
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value
