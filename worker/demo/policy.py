"""The demo's sending-policy examples: the settings that turn the rules on, one message each rule
catches, and the summary lines that show what became of them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from models import Encoding, OutboxMessage, Priority, SMSFromAlpha, Status, enqueue, segments_of
from worker.ops.suppressions import suppress

PACING_SECONDS = 2
DEDUPE_SECONDS = 600
OPTED_OUT = "46708100001"
COPIED = "46708100002"
PACED = "46708100003"
SMS = "46708100004"
SMS_TEXT = (
    "Hi Maja, your table\u2019s ready at 19:30 at Sjöboden, Strandvägen 12. Show this text at "
    "the door. Reply STOP to opt out."
)
STOP_REASON = "STOP by SMS"
# The campaign's recipients are in Stockholm; the quiet example goes to whichever of these is
# furthest from it in local time, so the window can cover one and never the other.
HOME = ZoneInfo("Europe/Stockholm")
QUIET_CANDIDATES = {"Pacific/Auckland": "64211234567", "Pacific/Honolulu": "18085550123"}
ACCEPTED = 4  # the two paced messages, the SMS and the first of the two copies
FAILED = 2  # the opted-out recipient's message and the copy
HELD = 1  # the quiet-hours message: pending until its window ends


@dataclass(frozen=True)
class QuietHours:
    """A window quiet now in ``zone`` (one hour begun, three to go) and never in Stockholm."""

    window: str
    zone: str
    recipient: str


def quiet_hours(now: datetime) -> QuietHours:
    """The window and recipient for the quiet-hours example, chosen from the time ``now``."""
    zone, recipient = max(QUIET_CANDIDATES.items(), key=lambda item: _apart(now, item[0]))
    hour = now.astimezone(ZoneInfo(zone)).hour
    window = f"{(hour - 1) % 24:02d}:00-{(hour + 3) % 24:02d}:00"
    return QuietHours(window, zone, recipient)


def _apart(now: datetime, zone: str) -> float:
    """Hours between the local clocks of ``zone`` and Stockholm, round the dial."""
    offset = now.astimezone(ZoneInfo(zone)).utcoffset()
    home = now.astimezone(HOME).utcoffset()
    assert offset is not None and home is not None
    hours = (offset - home).total_seconds() / 3600 % 24
    return min(hours, 24 - hours)


def settings(quiet: QuietHours) -> dict[str, str]:
    """The policy settings of the demo (every rule is off by default)."""
    return {
        "OUTBOX_DEDUPE_WINDOW_SECONDS": str(DEDUPE_SECONDS),
        "OUTBOX_RECIPIENT_MIN_INTERVAL_SECONDS": str(PACING_SECONDS),
        "OUTBOX_QUIET_HOURS": quiet.window,
    }


def enqueue_examples(engine: Engine, quiet: QuietHours) -> None:
    """Opt one recipient out, then enqueue one message for each rule."""
    with engine.begin() as connection:
        suppress(connection, OPTED_OUT, reason=STOP_REASON)
    examples = [
        ("demo-policy-opted-out", OPTED_OUT, "Spring sale: 20% off", Priority.BULK),
        ("demo-policy-original", COPIED, "Your parcel is on its way", Priority.NORMAL),
        ("demo-policy-copy", COPIED, "Your parcel is on its way", Priority.NORMAL),
        ("demo-policy-paced-1", PACED, "Your booking is confirmed", Priority.NORMAL),
        ("demo-policy-paced-2", PACED, "Your receipt is attached", Priority.NORMAL),
        ("demo-policy-sms", SMS, SMS_TEXT, Priority.NORMAL),
        ("demo-policy-quiet", quiet.recipient, "Spring sale: 20% off", Priority.BULK),
    ]
    with Session(engine) as session, session.begin():
        for client_message_id, recipient, text, priority in examples:
            enqueue(
                session,
                recipient=recipient,
                content=SMSFromAlpha(sender="Wiraya", text=text),
                client_message_id=client_message_id,
                priority=priority,
            )
            session.flush()  # ids in this order: the copy comes after its original


def held(engine: Engine) -> int:
    """How many of the examples are pending (the quiet-hours one, once the others are final)."""
    with Session(engine) as session:
        row = session.get_one(OutboxMessage, _id_of(session, "demo-policy-quiet"))
        return 1 if row.status == Status.PENDING.value else 0


def _id_of(session: Session, client_message_id: str) -> int:
    query = select(OutboxMessage.id).where(OutboxMessage.client_message_id == client_message_id)
    return session.execute(query).scalar_one()


def summary(out: TextIO, engine: Engine, quiet: QuietHours) -> None:
    """One line per rule: what became of the message it caught."""
    with Session(engine) as session:
        rows = {
            row.client_message_id: row
            for row in session.scalars(
                select(OutboxMessage).where(OutboxMessage.client_message_id.like("demo-policy-%"))
            )
        }
    print("\n  sending policy (docs/sending-policy.md):", file=out)
    print(f"    opted out     {_outcome(rows['demo-policy-opted-out'])}", file=out)
    print(f"    duplicate     {_outcome(rows['demo-policy-copy'])}", file=out)
    print(
        f"    paced         {_paced(rows['demo-policy-paced-1'], rows['demo-policy-paced-2'])}",
        file=out,
    )
    print(f"    SMS segments  {_segments(rows['demo-policy-sms'])}", file=out)
    print(f"    quiet hours   {_quiet(rows['demo-policy-quiet'], quiet)}", file=out)


def _outcome(row: OutboxMessage) -> str:
    return (
        f"{row.client_message_id} {row.status} unsent ({row.attempts} attempts): {row.last_error}"
    )


def _paced(first: OutboxMessage, second: OutboxMessage) -> str:
    if first.accepted_at is None or second.accepted_at is None:
        return f"{second.client_message_id} {second.status}"
    gap = (second.accepted_at - first.accepted_at).total_seconds()
    return (
        f"{second.client_message_id} accepted {gap:.1f}s after {first.client_message_id} "
        f"(interval {PACING_SECONDS}s), {second.attempts} attempt: held without spending one"
    )


def _segments(row: OutboxMessage) -> str:
    encoding = "UCS-2" if segments_of(SMS_TEXT).encoding is Encoding.UCS2 else "GSM-7"
    plain = segments_of(SMS_TEXT.replace("\u2019", "'")).count
    return (
        f"{row.client_message_id} {row.segments} parts, {encoding}: one curly quote in "
        f"{len(SMS_TEXT)} characters (with a straight one, {plain} part in GSM-7)"
    )


def _quiet(row: OutboxMessage, quiet: QuietHours) -> str:
    local = row.next_attempt_at.astimezone(ZoneInfo(quiet.zone))
    return (
        f"{row.client_message_id} held by quiet hours until {row.next_attempt_at:%H:%M} UTC "
        f"({local:%H:%M} {quiet.zone}, window {quiet.window}), {row.status}, "
        f"{row.attempts} attempts; not waited for"
    )
