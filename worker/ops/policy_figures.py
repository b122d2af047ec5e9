"""What the sending policy is doing, for operators: messages held and until when, segments
sent today, and which rule held or failed one message."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from models import Status
from models.outbox import outbox_messages as outbox
from worker.ops.queries import lane_name

# The reasons the policy writes in last_error, by their first word (docs/sending-policy.md).
RULES = {
    "held": "quiet hours",
    "paced": "per-recipient pacing",
    "suppressed": "opt-out list",
    "duplicate": "duplicate guard",
    "quota": "daily quota",  # "held: daily quota ..." (worker/dispatch/policy/quotas.py)
}
HELD_PREFIXES = ("held:", "paced:")


@dataclass(frozen=True)
class PolicyFigures:
    """Pending messages the policy holds (and the latest moment one is held until), and SMS
    segments of the messages accepted since midnight UTC, by lane."""

    held: int = 0
    held_until: datetime | None = None
    segments_today: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        until = None if self.held_until is None else self.held_until.isoformat()
        return {"held": self.held, "held_until": until, "segments_today": self.segments_today}

    def lines(self) -> list[str]:
        until = (
            ""
            if self.held_until is None
            else f", the last until {self.held_until:%Y-%m-%d %H:%M} UTC"
        )
        parts = ", ".join(f"{lane} {count:,}" for lane, count in self.segments_today.items())
        return [
            f"  held         {self.held:,} (quiet hours, pacing, daily quotas){until}",
            f"  segments     {parts or '0'} (SMS parts accepted today, UTC)",
        ]


def policy_figures(connection: Connection, now: datetime) -> PolicyFigures:
    """The figures at ``now`` (the outbox's time)."""
    counts = [
        connection.execute(
            select(func.count(), func.max(outbox.c.next_attempt_at)).where(
                outbox.c.status == Status.PENDING,
                outbox.c.next_attempt_at > now,
                outbox.c.last_error.like(f"{prefix}%"),
            )
        ).one()
        for prefix in HELD_PREFIXES
    ]
    untils = [until for _, until in counts if until is not None]
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    segments = (
        select(outbox.c.priority, func.coalesce(func.sum(outbox.c.segments), 0))
        .where(outbox.c.status == Status.ACCEPTED, outbox.c.accepted_at >= midnight)
        .group_by(outbox.c.priority)
        .order_by(outbox.c.priority)
    )
    return PolicyFigures(
        held=sum(count for count, _ in counts),
        held_until=max(untils, default=None),
        segments_today={lane_name(p): int(n) for p, n in connection.execute(segments)},
    )


def rule_of(last_error: object, next_attempt_at: object) -> str | None:
    """Which policy rule held or failed a message, and until when, from its row."""
    if not isinstance(last_error, str):
        return None
    word = last_error.split(":", 1)[0].split(" ", 1)[0]
    if word == "expired" and "quiet hours" in last_error:
        return "quiet hours (expired inside the window)"
    if word == "expired" and "daily quota" in last_error:
        return "daily quota (expired before the next quota day)"
    if word == "held" and "daily quota" in last_error:
        word = "quota"
    rule = RULES.get(word)
    if rule is None:
        return None
    if word in ("held", "paced", "quota") and isinstance(next_attempt_at, datetime):
        return f"{rule}: held until {next_attempt_at:%Y-%m-%d %H:%M:%S} UTC"
    return rule
