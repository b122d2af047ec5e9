"""The `outbox` command's entry point: its parser, and the one-line handling of errors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from models import FINAL_STATUSES, Priority, Status
from worker.ops import access
from worker.ops import migrate as migration
from worker.ops.access import OperatorError
from worker.ops.cli import changing, reading
from worker.settings import OperatorSettings, ReceiverSettings, SettingsError

DEFAULT_METRICS_PORT = 9808
DEFAULT_RECEIVER_PORT = 8090
LANES = ", ".join(priority.name.lower() for priority in Priority)

Handler = Callable[[argparse.Namespace, OperatorSettings], int]
if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]  # what add_subparsers returns


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
    _add_reading(commands)
    _add_changing(commands)
    _add_running(commands)
    return parser


def _add_reading(commands: Commands) -> None:
    stats = commands.add_parser(
        "stats", help="counts by status and lane, backlog age, leases, failures, sending state"
    )
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.add_argument(
        "--exact",
        action="store_true",
        help="count accepted rows exactly however many there are (reads the whole history)",
    )
    stats.set_defaults(handler=reading.cmd_stats)

    inspect = commands.add_parser("inspect", help="everything about one message")
    inspect.add_argument("client_message_id", metavar="CLIENT_MESSAGE_ID")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(handler=reading.cmd_inspect)


def _add_changing(commands: Commands) -> None:
    retry = commands.add_parser(
        "retry", help="failed messages back to pending, due now, with fresh attempts"
    )
    _add_selection(retry, "failed", "when they failed (updated_at)")
    retry.add_argument(
        "--renew-age",
        action="store_true",
        help="count their age (OUTBOX_MAX_AGE_SECONDS) from now, so old ones do not expire again",
    )
    retry.set_defaults(handler=changing.cmd_retry)

    cancel = commands.add_parser(
        "cancel", help="withdraw pending messages (only never-sent ones unless --include-sent)"
    )
    _add_selection(cancel, "pending", "when they were created (created_at)")
    cancel.add_argument(
        "--include-sent",
        action="store_true",
        help="also cancel pending messages that may already have reached Wiraya",
    )
    cancel.set_defaults(handler=changing.cmd_cancel)

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
    prune.set_defaults(handler=changing.cmd_prune)

    resume = commands.add_parser(
        "resume", help="clear a pause, open circuit or refused key now (after fixing the cause)"
    )
    resume.set_defaults(handler=changing.cmd_resume)


def _add_running(commands: Commands) -> None:
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


def _add_selection(parser: argparse.ArgumentParser, status: str, time_meaning: str) -> None:
    parser.add_argument(
        "client_message_ids", nargs="*", metavar="CLIENT_MESSAGE_ID", help=f"{status} messages"
    )
    parser.add_argument("--error", metavar="TEXT", help="last_error contains TEXT (any case)")
    parser.add_argument(
        "--since", metavar="TIME", help=f"{time_meaning} at or after TIME: ISO 8601 or e.g. 2h ago"
    )
    parser.add_argument("--until", metavar="TIME", help="... and before TIME")
    parser.add_argument(
        "--priority", type=_priority, metavar="LANE", help=f"only messages of one lane: {LANES}"
    )
    parser.add_argument("--all", action="store_true", help=f"every {status} message")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask")


def _priority(text: str) -> Priority:
    try:
        return Priority[text.strip().upper()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a lane: {LANES}") from None


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
        return serve(app, sock, login)


def cmd_demo(args: argparse.Namespace, settings: OperatorSettings) -> int:
    from worker.ops.demo import run_demo

    if args.messages < 1:
        raise OperatorError("--messages: at least 1", 2)
    return run_demo(messages=args.messages, folder=args.folder)
