"""The `outbox` command's entry point: its parser, and the one-line handling of errors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from models import FINAL_STATUSES, Priority, Status
from models import tenant as tenant_names
from models.databases import database_of
from models.text import shown
from worker.errors import GrantsError, MissingRight, OperatorError, SchemaBehind, SettingsError
from worker.ops import access
from worker.ops import migrate as migration
from worker.ops.cli import changing, reading, suppressing
from worker.ops.grants import grants_sql
from worker.ops.hints import clock_line
from worker.ops.privileges import ROLES, receiver_duties
from worker.ops.start_check import require_rights
from worker.settings import OperatorSettings, ReceiverSettings

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
        description="Operate the Wiraya outbox. The database is OUTBOX_DATABASE_URL, or the "
        "content of the file OUTBOX_DATABASE_URL_FILE names (default sqlite:///outbox.db), "
        "unless --database-url or --database-url-file is given.",
    )
    urls = parser.add_mutually_exclusive_group()
    urls.add_argument(
        "--database-url",
        metavar="URL",
        help="the outbox database to use; a password in it shows in `ps` to every user of the "
        "machine: give it in OUTBOX_DATABASE_URL or a file instead",
    )
    urls.add_argument(
        "--database-url-file",
        metavar="PATH",
        type=_url_in_file,
        dest="database_url",
        help="read the database URL from a file (its final line break dropped)",
    )
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
    stats.add_argument(
        "--tenant",
        action="store_true",
        help="each tenant's unfinished and failed messages, oldest due, and its key's brakes",
    )
    stats.set_defaults(handler=reading.cmd_stats)

    inspect = commands.add_parser("inspect", help="everything about one message, or one tenant")
    inspect.add_argument("client_message_id", nargs="?", metavar="CLIENT_MESSAGE_ID")
    inspect.add_argument(
        "--tenant",
        type=_tenant,
        metavar="NAME",
        help="one tenant's figures, quotas and next messages; with an id: only its message",
    )
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(handler=reading.cmd_inspect)


def _add_changing(commands: Commands) -> None:
    retry = commands.add_parser(
        "retry", help="failed messages back to pending, due now, with fresh attempts"
    )
    _add_selection(retry, Status.FAILED, "when they failed (updated_at)")
    retry.add_argument(
        "--renew-age",
        action="store_true",
        help="count their age (OUTBOX_MAX_AGE_SECONDS) from now, so old ones do not expire again",
    )
    retry.set_defaults(handler=changing.cmd_retry)

    cancel = commands.add_parser(
        "cancel", help="withdraw pending messages (only never-sent ones unless --include-sent)"
    )
    _add_selection(cancel, Status.PENDING, "when they were created (created_at)")
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

    suppressing.add_parser(commands)


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

    grants = commands.add_parser(
        "grants",
        help="print the SQL giving each process's role exactly its rights (pipe it to psql "
        "as the outbox's owner, after every migration)",
    )
    for process in ROLES:
        grants.add_argument(f"--{process}", metavar="ROLE", help=f"the {process}'s role")
    grants.add_argument("--schema", default="public", help="the outbox's schema (default public)")
    grants.add_argument(
        "--create-roles",
        action="store_true",
        help="create the roles (LOGIN, no password: set one apart) unless they exist",
    )
    grants.add_argument(
        "--apply",
        action="store_true",
        help="run the SQL on the outbox database instead of printing it (connected as its owner)",
    )
    grants.set_defaults(handler=cmd_grants)

    demo = commands.add_parser(
        "demo", help="SQLite, a filesystem broker, the sandbox, a real worker and beat"
    )
    demo.add_argument("--messages", type=int, default=2000, help="how many (default 2000)")
    demo.add_argument("--folder", default=".demo", help="where its files go (default .demo)")
    demo.set_defaults(handler=cmd_demo)

    commands.add_parser(
        "sandbox", help="run the local Wiraya sandbox (`outbox sandbox --help` for its flags)"
    )


def _add_selection(parser: argparse.ArgumentParser, status: Status, time_meaning: str) -> None:
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
    parser.add_argument(
        "--tenant",
        type=_tenant,
        metavar="NAME",
        help='only one tenant\'s messages ("" for the default tenant)',
    )
    parser.add_argument("--all", action="store_true", help=f"every {status} message")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask")


def _url_in_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise argparse.ArgumentTypeError(f"cannot read {path}: {reason}") from None


def _tenant(text: str) -> str:
    problem = tenant_names.problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"tenant {shown(text)} {problem}")
    return text


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
    from worker.reports.app import create_app
    from worker.reports.server import listen, serve

    login = ReceiverSettings.from_environ(OUTBOX_DATABASE_URL=settings.database_url)
    with access.open_outbox(settings.database_url) as engine:
        try:
            require_rights(engine, "receiver", receiver_duties())
        except (MissingRight, SchemaBehind) as error:
            raise OperatorError(str(error), 3) from None
        if (skew := clock_line(engine)) is not None:
            print(f"outbox receiver: {skew}", file=sys.stderr)
        try:
            sock = listen(args.host, args.port)
        except OSError as error:
            where = f"{args.host}:{args.port}"
            raise OperatorError(f"cannot listen on {where}: {error.strerror or error}") from None
        app = create_app(engine, login, counters_client=counters_redis(settings.broker_url))
        return serve(app, sock, login)


def cmd_grants(args: argparse.Namespace, settings: OperatorSettings) -> int:
    roles = {process: getattr(args, process) for process in ROLES if getattr(args, process)}
    if not roles:
        raise OperatorError("grants: name at least one role (--producer, --worker, ...)", 2)
    try:
        script = grants_sql(roles, schema=args.schema, create=args.create_roles)
    except GrantsError as error:
        raise OperatorError(f"grants: {error}", 2) from None
    if not args.apply:
        sys.stdout.write(script)
        return 0
    with access.open_outbox(settings.database_url) as engine:
        if not database_of(engine).has_roles:
            raise OperatorError("grants: SQLite has no roles: nothing to grant", 2)
        access.run_script(engine, script)
    names = ", ".join(f"{process} {name}" for process, name in roles.items())
    print(f"granted each role its rights at {access.shown_url(settings.database_url)}: {names}")
    return 0


def cmd_demo(args: argparse.Namespace, settings: OperatorSettings) -> int:
    from worker.demo.run import run_demo

    if args.messages < 1:
        raise OperatorError("--messages: at least 1", 2)
    return run_demo(messages=args.messages, folder=args.folder)
