"""`outbox retry`, `cancel`, `prune` and `resume`: each shows what it would change and asks."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from models import Priority, Status
from worker.clock import utc_now
from worker.database import database_now
from worker.errors import OperatorError
from worker.ops import access, cancel, changes, retry
from worker.ops.cli.times import human_duration, parse_duration, parse_moment
from worker.ops.selection import Selection
from worker.settings import OperatorSettings


def cmd_retry(args: argparse.Namespace, settings: OperatorSettings) -> int:
    selection = _selection(args, "retry")
    with access.open_outbox(settings.database_url) as engine:
        now = database_now(engine)  # the outbox's time, which the rows' times are in
        plan = retry.plan_retry(engine, selection, now=now, max_age=settings.max_age)
        if plan.matched == 0:
            print("no failed messages match: nothing to retry")
            return 0
        question = f"retry {plan.matched:,} failed messages"
        if plan.too_old and not args.renew_age:
            question += (
                f" ({plan.too_old:,} of them due for longer than OUTBOX_MAX_AGE_SECONDS="
                f"{human_duration(settings.max_age)}: they will expire again at once "
                "unless you add --renew-age)"
            )
        _confirm(question, args.yes)
        moved = retry.retry(engine, plan, now=database_now(engine), renew_age=args.renew_age)
    print(f"retried {moved:,} messages: pending and due now")
    return 0


def cmd_cancel(args: argparse.Namespace, settings: OperatorSettings) -> int:
    selection = _selection(args, "cancel")
    with access.open_outbox(settings.database_url) as engine:
        plan = cancel.plan_cancel(engine, selection, now=database_now(engine))
        if plan.matched == 0:
            print("no pending messages match: nothing to cancel")
            if plan.sending:
                print(_being_sent(plan))
            return 0
        sent = plan.maybe_sent
        if args.include_sent:
            question = f"cancel {plan.matched:,} pending messages{_lanes(plan)}"
            if sent:
                question += f" ({sent:,} of them may already have reached Wiraya)"
        elif sent == plan.matched:
            print(
                f"all {sent:,} of the pending messages selected may already have reached "
                "Wiraya: nothing to cancel (add --include-sent to cancel them anyway)"
            )
            return 0
        elif sent:
            question = (
                f"cancel {plan.matched - sent:,} of {plan.matched:,} pending messages"
                f"{_lanes(plan)}: {sent:,} of them may already have reached Wiraya and stay "
                "pending (add --include-sent to cancel them too)"
            )
        else:
            question = f"cancel {plan.matched:,} pending messages{_lanes(plan)}"
        urgent = plan.by_lane.get(Priority.URGENT, 0)
        if urgent and args.priority is not Priority.URGENT:
            print(
                f"WARNING: {urgent:,} urgent messages (codes, alerts) are among them; "
                "add --priority bulk (or normal) to leave them out."
            )
        if plan.sending:
            print(_being_sent(plan))
        _confirm(question, args.yes)
        now = database_now(engine)
        moved = cancel.cancel(
            engine, plan, now=now, include_sent=args.include_sent, progress=_progress(plan)
        )
    print(f"cancelled {moved:,} messages")
    return 0


def _lanes(plan: changes.Plan) -> str:
    """The selected pending messages by lane: ' (urgent 5, normal 0, bulk 100)'."""
    shown = ", ".join(f"{lane.name.lower()} {plan.by_lane.get(lane, 0):,}" for lane in Priority)
    return f" (by lane: {shown})"


def _being_sent(plan: changes.Plan) -> str:
    return (
        f"{plan.sending:,} messages of the selection are being sent right now: they are not "
        "cancelled, and will reach Wiraya"
    )


def _progress(plan: changes.Plan) -> Callable[[int], None]:
    """Prints the running total of a long cancel, chunk by chunk."""

    def show(done: int) -> None:
        print(f"  ... cancelled {done:,} of {plan.matched:,} so far", flush=True)

    return show


def cmd_prune(args: argparse.Namespace, settings: OperatorSettings) -> int:
    age = parse_duration(args.older_than, "--older-than")
    status = Status(args.status)
    with access.open_outbox(settings.database_url) as engine:
        cutoff = database_now(engine) - age
        matched = changes.plan_prune(engine, status=status, cutoff=cutoff)
        if matched == 0:
            print(f"no {status.value} messages older than {human_duration(age)}: nothing to prune")
            return 0
        _confirm(
            f"delete {matched:,} {status.value} messages older than {human_duration(age)}",
            args.yes,
        )
        deleted = changes.prune(engine, status=status, cutoff=cutoff)
    print(f"deleted {deleted:,} {status.value} messages")
    return 0


def cmd_resume(args: argparse.Namespace, settings: OperatorSettings) -> int:
    with access.open_outbox(settings.database_url) as engine:
        changes.resume(engine, now=database_now(engine))
    print(
        "sending resumed: pause, circuit, refused key, learnt rate and batch limit cleared "
        "(each key's next request slot kept)"
    )
    return 0


def _selection(args: argparse.Namespace, verb: str) -> Selection:
    """The rows the command line names; refused when it names none (without --all)."""
    now = utc_now()
    since = parse_moment(args.since, "--since", now) if args.since else None
    until = parse_moment(args.until, "--until", now) if args.until else None
    if since is not None and until is not None and since >= until:
        raise OperatorError(
            f"bad time range: --since {since:%Y-%m-%d %H:%M:%S} is not before "
            f"--until {until:%Y-%m-%d %H:%M:%S} (UTC)",
            2,
        )
    if args.error is not None and not args.error.strip():
        raise OperatorError(
            "--error: give the text to look for (an empty one matches every message; "
            "say --all for that)",
            2,
        )
    selection = Selection(
        client_message_ids=tuple(args.client_message_ids),
        error=args.error,
        since=since,
        until=until,
        priority=args.priority,
        tenant=args.tenant,
    )
    if selection == Selection() and not args.all:
        raise OperatorError(
            f"say which messages to {verb}: CLIENT_MESSAGE_IDs, --error, --since/--until, "
            "--priority, --tenant, or --all",
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
