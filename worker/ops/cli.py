"""`outbox`: the operator's command line (stats, inspect, retry, cancel, prune, migrate, ...).

This module parses arguments and prints; what it reads and changes is in `worker.ops.snapshot`
and `worker.ops.changes` (and the SQL in `worker.ops.queries`). Errors an operator can act on
print one line, ``outbox: ...``, and exit non-zero: 1 for a problem with the data or the
database, 2 for a wrong command line, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from models import FINAL_STATUSES, Status
from worker.ops import access, changes
from worker.ops import migrate as migration
from worker.ops import snapshot as snapshots
from worker.ops.access import OperatorError
from worker.ops.queries import Selection
from worker.receipts import figures as receipts
from worker.settings import OperatorSettings, ReceiverSettings, SettingsError

DEFAULT_METRICS_PORT = 9808
DEFAULT_RECEIVER_PORT = 8090
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}

Handler = Callable[[argparse.Namespace, OperatorSettings], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `outbox` command; returns its exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["sandbox"]:  # the sandbox owns its flags
        from sandbox.cli import main as sandbox_main

        return sandbox_main(args_list[1:], prog="outbox sandbox")
    parser = build_parser()
    args = parser.parse_args(args_list)
    try:
        settings = access.operator_settings()
        if args.database_url:
            settings = settings.model_copy(update={"database_url": args.database_url})
        handler: Handler = args.handler
        return handler(args, settings)
    except SettingsError as error:
        return _fail(f"invalid configuration: {error}", 2)
    except OperatorError as error:
        return _fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # `outbox stats | head`: the reader has gone, and that is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


def _fail(message: str, code: int) -> int:
    print(f"outbox: {message}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    """Every command and its options."""
    parser = argparse.ArgumentParser(
        prog="outbox",
        description="Operate the Wiraya outbox. The database is OUTBOX_DATABASE_URL "
        "(default sqlite:///outbox.db) unless --database-url is given.",
    )
    parser.add_argument("--database-url", metavar="URL", help="the outbox database to use")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    stats = commands.add_parser("stats", help="counts by status, backlog age, leases, failures")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(handler=cmd_stats)

    inspect = commands.add_parser("inspect", help="everything about one message")
    inspect.add_argument("client_message_id", metavar="CLIENT_MESSAGE_ID")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(handler=cmd_inspect)

    retry = commands.add_parser(
        "retry", help="failed messages back to pending, due now, with fresh attempts"
    )
    _add_selection(retry, "failed", "when they failed (updated_at)")
    retry.add_argument(
        "--renew-age",
        action="store_true",
        help="count their age (OUTBOX_MAX_AGE_SECONDS) from now, so old ones do not expire again",
    )
    retry.set_defaults(handler=cmd_retry)

    cancel = commands.add_parser("cancel", help="withdraw pending messages (never sent ones)")
    _add_selection(cancel, "pending", "when they were created (created_at)")
    cancel.set_defaults(handler=cmd_cancel)

    prune = commands.add_parser("prune", help="delete finished messages older than a duration")
    prune.add_argument(
        "--older-than", required=True, metavar="DURATION", help="e.g. 30d, 12h, 90m, 3600"
    )
    prune.add_argument(
        "--status",
        choices=sorted(status.value for status in FINAL_STATUSES),
        default=Status.ACCEPTED.value,
        help="which finished messages (default accepted, by accepted_at; others by updated_at)",
    )
    prune.add_argument("--yes", "-y", action="store_true", help="do not ask")
    prune.set_defaults(handler=cmd_prune)

    resume = commands.add_parser(
        "resume", help="clear a pause, open circuit or refused key now (after fixing the cause)"
    )
    resume.set_defaults(handler=cmd_resume)

    migrate = commands.add_parser("migrate", help="alembic upgrade head on the outbox database")
    migrate.set_defaults(handler=cmd_migrate)

    metrics = commands.add_parser("metrics", help="serve Prometheus metrics of the outbox")
    metrics.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    metrics.add_argument(
        "--port", type=int, default=DEFAULT_METRICS_PORT, help="port (default 9808)"
    )
    metrics.set_defaults(handler=cmd_metrics)

    receiver = commands.add_parser(
        "receiver", help="receive Wiraya's delivery reports (POST /wiraya/callbacks)"
    )
    receiver.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    receiver.add_argument(
        "--port", type=int, default=DEFAULT_RECEIVER_PORT, help="port (default 8090)"
    )
    receiver.set_defaults(handler=cmd_receiver)

    demo = commands.add_parser(
        "demo", help="SQLite, a filesystem broker, the sandbox, a real worker and beat"
    )
    demo.add_argument("--messages", type=int, default=2000, help="how many (default 2000)")
    demo.add_argument("--folder", default=".demo", help="where its files go (default .demo)")
    demo.set_defaults(handler=cmd_demo)

    commands.add_parser(
        "sandbox", help="run the local Wiraya sandbox (`outbox sandbox --help` for its flags)"
    )
    return parser


def _add_selection(parser: argparse.ArgumentParser, status: str, time_meaning: str) -> None:
    parser.add_argument(
        "client_message_ids", nargs="*", metavar="CLIENT_MESSAGE_ID", help=f"{status} messages"
    )
    parser.add_argument("--error", metavar="TEXT", help="last_error contains TEXT (any case)")
    parser.add_argument(
        "--since", metavar="TIME", help=f"{time_meaning} at or after TIME: ISO 8601 or e.g. 2h ago"
    )
    parser.add_argument("--until", metavar="TIME", help="... and before TIME")
    parser.add_argument("--all", action="store_true", help=f"every {status} message")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask")


# Commands ---------------------------------------------------------------------------------------


def cmd_stats(args: argparse.Namespace, settings: OperatorSettings) -> int:
    with access.open_outbox(settings.database_url) as engine:
        snapshot = snapshots.take_snapshot(
            engine, now=utc_now(), circuit_failures=settings.circuit_failures
        )
        delivery = receipts.delivery_figures(engine)
    if args.json:
        print(json.dumps({**snapshot.to_json(), "delivery": delivery.to_json()}, indent=2))
        return 0
    figures = snapshot.figures
    counts = figures.by_status
    notes = {
        Status.PENDING.value: f"{figures.due_now} due now, {figures.retrying} retrying",
        Status.SENDING.value: (
            f"{figures.leases_in_flight} leases in flight, {figures.expired_leases} expired"
        ),
    }
    print(f"outbox at {access.shown_url(settings.database_url)}")
    print()
    for status in Status:
        note = notes.get(status.value)
        print(
            f"  {status.value:<10} {counts[status.value]:>10,}" + (f"   ({note})" if note else "")
        )
    print(f"  {'total':<10} {sum(counts.values()):>10,}")
    print()
    age = snapshot.oldest_unfinished_age
    print(f"  oldest pending   {'-' if age is None else human_duration(age)}")
    print(f"  dispatch         {snapshot.gate.describe()}")
    print()
    print("delivery (accepted messages by their latest report)")
    print("\n".join(delivery.lines()))
    if snapshot.failure_reasons:
        print()
        print("top failure reasons")
        for reason, count in snapshot.failure_reasons:
            print(f"  {count:>8,}  {reason}")
    return 0


def cmd_inspect(args: argparse.Namespace, settings: OperatorSettings) -> int:
    with access.open_outbox(settings.database_url) as engine:
        row = snapshots.find_message(engine, args.client_message_id)
        reports = receipts.message_reports(engine, row["tracking_id"])
    shown = {key: _jsonable(value) for key, value in row.items()}
    listed = [{key: _jsonable(value) for key, value in report.items()} for report in reports]
    if args.json:
        print(json.dumps({**shown, "delivery_reports": listed}, indent=2, ensure_ascii=False))
        return 0
    width = max(len(key) for key in shown)
    for key, value in shown.items():
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value
        print(f"{key:<{width}}  {'-' if text is None else text}")
    print(f"\ndelivery reports ({len(listed)})")
    for report in listed:
        print(
            f"  {report['status']:<16} done {report['done_at'] or '-'}  received "
            f"{report['received_at']}  {report['report']}"
        )
    return 0


def cmd_retry(args: argparse.Namespace, settings: OperatorSettings) -> int:
    selection = _selection(args, "retry")
    now = utc_now()
    with access.open_outbox(settings.database_url) as engine:
        plan = changes.plan_retry(engine, selection, now=now, max_age=settings.max_age)
        if plan.matched == 0:
            print("no failed messages match: nothing to retry")
            return 0
        question = f"retry {plan.matched:,} failed messages"
        if plan.too_old and not args.renew_age:
            question += (
                f" ({plan.too_old:,} of them older than OUTBOX_MAX_AGE_SECONDS="
                f"{human_duration(settings.max_age)}: they will expire again at once "
                "unless you add --renew-age)"
            )
        _confirm(question, args.yes)
        moved = changes.retry(engine, selection, now=utc_now(), renew_age=args.renew_age)
    print(f"retried {moved:,} messages: pending and due now")
    return 0


def cmd_cancel(args: argparse.Namespace, settings: OperatorSettings) -> int:
    selection = _selection(args, "cancel")
    with access.open_outbox(settings.database_url) as engine:
        plan = changes.plan_cancel(engine, selection)
        if plan.matched == 0:
            print("no pending messages match: nothing to cancel")
            return 0
        _confirm(f"cancel {plan.matched:,} pending messages", args.yes)
        moved = changes.cancel(engine, selection, now=utc_now())
    print(f"cancelled {moved:,} messages")
    return 0


def cmd_prune(args: argparse.Namespace, settings: OperatorSettings) -> int:
    age = parse_duration(args.older_than, "--older-than")
    status = Status(args.status)
    cutoff = utc_now() - age
    with access.open_outbox(settings.database_url) as engine:
        plan = changes.plan_prune(engine, status=status, cutoff=cutoff)
        if plan.matched == 0:
            print(f"no {status.value} messages older than {human_duration(age)}: nothing to prune")
            return 0
        _confirm(
            f"delete {plan.matched:,} {status.value} messages older than {human_duration(age)}",
            args.yes,
        )
        deleted = changes.prune(engine, status=status, cutoff=cutoff)
    print(f"deleted {deleted:,} {status.value} messages")
    return 0


def cmd_resume(args: argparse.Namespace, settings: OperatorSettings) -> int:
    with access.open_outbox(settings.database_url) as engine:
        changes.resume(engine, now=utc_now())
    print("sending resumed: pause, circuit, refused key, spacing and batch limit cleared")
    return 0


def cmd_migrate(args: argparse.Namespace, settings: OperatorSettings) -> int:
    revision = migration.migrate(settings.database_url)
    print(f"database at {access.shown_url(settings.database_url)} is at revision {revision}")
    return 0


def cmd_metrics(args: argparse.Namespace, settings: OperatorSettings) -> int:
    from worker.ops.metrics import serve

    with access.open_outbox(settings.database_url) as engine:
        return serve(engine, settings, host=args.host, port=args.port)


def cmd_receiver(args: argparse.Namespace, settings: OperatorSettings) -> int:
    from worker.ops.counters import counters_redis
    from worker.receipts.app import create_app
    from worker.receipts.server import listen, serve

    login = ReceiverSettings.from_environ(OUTBOX_DATABASE_URL=settings.database_url)
    with access.open_outbox(settings.database_url) as engine:
        try:
            sock = listen(args.host, args.port)
        except OSError as error:
            where = f"{args.host}:{args.port}"
            raise OperatorError(f"cannot listen on {where}: {error.strerror or error}") from None
        app = create_app(engine, login, counters_client=counters_redis(settings.broker_url))
        return serve(app, sock)


def cmd_demo(args: argparse.Namespace, settings: OperatorSettings) -> int:
    from worker.ops.demo import run_demo

    if args.messages < 1:
        raise OperatorError("--messages: at least 1", 2)
    return run_demo(messages=args.messages, folder=args.folder)


# Helpers ----------------------------------------------------------------------------------------


def _selection(args: argparse.Namespace, verb: str) -> Selection:
    now = utc_now()
    since = parse_moment(args.since, "--since", now) if args.since else None
    until = parse_moment(args.until, "--until", now) if args.until else None
    if since is not None and until is not None and since >= until:
        raise OperatorError(
            f"bad time range: --since {since:%Y-%m-%d %H:%M:%S} is not before "
            f"--until {until:%Y-%m-%d %H:%M:%S} (UTC)",
            2,
        )
    selection = Selection(
        client_message_ids=tuple(args.client_message_ids),
        error=args.error,
        since=since,
        until=until,
    )
    if selection == Selection() and not args.all:
        raise OperatorError(
            f"say which messages to {verb}: CLIENT_MESSAGE_IDs, --error, --since/--until, or --all",
            2,
        )
    return selection


def _confirm(question: str, assume_yes: bool) -> None:
    """Ask on the terminal unless --yes; anything but y/yes changes nothing."""
    print(question[0].upper() + question[1:] + ".")
    if assume_yes:
        return
    try:
        answer = input("Go ahead? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in {"y", "yes"}:
        raise OperatorError("nothing changed (answer y, or add --yes)")


def parse_duration(text: str, option: str) -> timedelta:
    """'90' (seconds), '45s', '90m', '12h', '30d', '2w' or '1h30m' as a timedelta."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise OperatorError(
                f"{option}: {text!r} is not a duration (e.g. 90, 45s, 90m, 12h, 30d)", 2
            ) from None
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if not 0 < seconds < 100 * 365 * 86_400:
        raise OperatorError(f"{option}: {text!r} must be more than 0 and under 100 years", 2)
    return timedelta(seconds=seconds)


def parse_moment(text: str, option: str, now: datetime) -> datetime:
    """An ISO 8601 time (UTC when no zone is given), or a duration meaning that long ago."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            return now - parse_duration(text, option)
        except OperatorError:
            raise OperatorError(
                f"{option}: {text!r} is neither an ISO 8601 time (2026-11-27T10:00) "
                "nor a duration ago (2h, 30m)",
                2,
            ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def human_duration(value: timedelta) -> str:
    """'3d 4h', '12m 5s', '0.4s': the two largest units."""
    seconds = value.total_seconds()
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if whole >= size or (unit == "s" and not parts):
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return " ".join(parts[:2])


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


if __name__ == "__main__":
    sys.exit(main())
