"""`outbox suppress add|remove|list`: the opt-out list the screen checks before every send."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from models import InvalidMessage
from models.text import escaped
from worker.errors import OperatorError
from worker.ops import access
from worker.ops.suppressions import suppress, suppressed, unsuppress
from worker.settings import OperatorSettings

T = TypeVar("T")


def cmd_suppress_add(args: argparse.Namespace, settings: OperatorSettings) -> int:
    with access.open_outbox(settings.database_url) as engine, engine.begin() as connection:
        number = _valid(
            lambda: suppress(
                connection, args.recipient, reason=args.reason, all_lanes=args.all_lanes
            )
        )
    lanes = "every lane" if args.all_lanes else "normal and bulk messages (codes still go)"
    print(f"suppressed {number}: {lanes}")
    return 0


def cmd_suppress_remove(args: argparse.Namespace, settings: OperatorSettings) -> int:
    with access.open_outbox(settings.database_url) as engine, engine.begin() as connection:
        removed = _valid(lambda: unsuppress(connection, args.recipient))
    if not removed:
        raise OperatorError(f"{escaped(args.recipient)} is not on the opt-out list")
    print(f"removed {escaped(args.recipient)} from the opt-out list")
    return 0


def cmd_suppress_list(args: argparse.Namespace, settings: OperatorSettings) -> int:
    with access.open_outbox(settings.database_url) as engine, engine.connect() as connection:
        entries = suppressed(connection)
    if not entries:
        print("the opt-out list is empty")
        return 0
    print(f"{'recipient':<16} {'lanes':<10} {'source':<9} {'since':<20} reason")
    for entry in entries:
        since = "-" if entry.created_at is None else f"{entry.created_at:%Y-%m-%d %H:%M:%S}"
        print(
            f"{entry.recipient:<16} {entry.scope:<10} {entry.source:<9} {since:<20} "
            f"{escaped(entry.reason)}"
        )
    return 0


def _valid(action: Callable[[], T]) -> T:
    """The action's result; a recipient that is no phone number is one line, exit code 2."""
    try:
        return action()
    except InvalidMessage as error:
        raise OperatorError(str(error), exit_code=2) from None


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`outbox suppress` and its three subcommands."""
    suppress_command = commands.add_parser(
        "suppress", help="the opt-out list: recipients no campaign goes to (add, remove, list)"
    )
    actions = suppress_command.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="put a recipient on the opt-out list")
    add.add_argument("recipient", metavar="RECIPIENT", help="a phone number, written any usual way")
    add.add_argument("--reason", default="", metavar="TEXT", help="why (shown in their messages)")
    add.add_argument(
        "--all-lanes", action="store_true", help="urgent messages too (by default codes still go)"
    )
    add.set_defaults(handler=cmd_suppress_add)
    remove = actions.add_parser("remove", help="take a recipient off the opt-out list")
    remove.add_argument("recipient", metavar="RECIPIENT")
    remove.set_defaults(handler=cmd_suppress_remove)
    listing = actions.add_parser("list", help="every recipient on the opt-out list")
    listing.set_defaults(handler=cmd_suppress_list)
