"""What the demo sends: a campaign of every content type with the sandbox's test recipients mixed
in, a few rows only plain SQL could write, and urgent codes sent while the campaign drains."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from models import (
    OutboxMessage,
    Priority,
    SMSFromAlpha,
    SMSProject,
    Status,
    VoiceProject,
    WhatsappProject,
    enqueue,
    enqueue_many,
)
from worker.clock import utc_now

# Test recipients (sandbox/recipients.py): the last seven digits choose the sandbox's answer.
SPECIAL = {
    # prefix: (recipient, how many per 2,000, what becomes of them)
    "blocked": ("46700000001", 12, Status.FAILED),  # permanent failure, never resent
    "flaky": ("46700000002", 16, Status.ACCEPTED),  # transient twice, accepted on the third try
    "down": ("46700000003", 6, Status.FAILED),  # transient for ever: failed after 4 attempts
    "lost": ("46700000004", 10, Status.ACCEPTED),  # missing from results once, resent, same id
    "undelivered": ("46700000007", 20, Status.ACCEPTED),  # its delivery report says NOT_DELIVERED
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


# Verification codes, sent one by one once this share of the campaign is done: they overtake it.
CODES = 5
CODES_AFTER = 0.25
CODE_TTL = timedelta(minutes=5)


def enqueue_campaign(engine: Engine, messages: int) -> Expected:
    """Insert the campaign (bulk priority) in one transaction; returns what each should become."""
    expected = Expected()
    rows: list[dict[str, Any]] = []
    for prefix, count in special_counts(messages).items():
        recipient, _, outcome = SPECIAL[prefix]
        for number in range(1, count + 1):
            client_message_id = f"demo-{prefix}-{number:03d}"
            rows.append(_message(len(rows), client_message_id, _spread(recipient, number)))
            setattr(expected, outcome.value, getattr(expected, outcome.value) + 1)
        if count:
            expected.examples[prefix] = f"demo-{prefix}-001"
    while len(rows) < messages:
        number = len(rows)
        rows.append(_message(number, f"demo-{number:05d}", f"4670{1_000_000 + number:07d}"))
        expected.accepted += 1
    # Interleave the special messages with the others, as real traffic would be.
    rows.sort(key=lambda row: zlib.crc32(row["client_message_id"].encode()))
    for row in rows:
        row["priority"] = Priority.BULK  # a campaign: urgent messages go first
    with Session(engine) as session, session.begin():
        enqueue_many(session, rows)
        for number, content in enumerate(INVALID_CONTENTS, start=1):
            values = {"client_message_id": f"demo-invalid-{number:03d}", "content": content}
            session.execute(text(INVALID_INSERT), values)
    expected.failed += INVALID_SQL_ROWS
    expected.examples["invalid"] = "demo-invalid-001"
    return expected


def _spread(recipient: str, number: int) -> str:
    """One of ten numbers with ``recipient``'s test suffix, so that pacing (one message per
    recipient every few seconds) holds each of them at most once."""
    return f"{recipient[:3]}{number % 10}{recipient[4:]}"


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


@dataclass
class UrgentCodes:
    """Urgent messages committed one by one while the campaign drains, and their latency."""

    engine: Engine
    committed: dict[str, datetime] = field(default_factory=dict)

    def send_when_due(self, done: int, total: int) -> None:
        """Once a quarter of the campaign is done, commit the codes (each its own transaction)."""
        if self.committed or done < total * CODES_AFTER:
            return
        for number in range(1, CODES + 1):
            client_message_id = f"demo-code-{number:03d}"
            code = number * 137_911 % 1_000_000
            with Session(self.engine) as session, session.begin():
                enqueue(
                    session,
                    recipient=f"4670{2_000_000 + number:07d}",
                    content=SMSFromAlpha(sender="Wiraya", text=f"Your code is {code:06d}"),
                    client_message_id=client_message_id,
                    priority=Priority.URGENT,
                    ttl=CODE_TTL,
                )
            self.committed[client_message_id] = utc_now()

    def latencies_ms(self) -> list[float]:
        """Commit to accepted, for each code accepted so far."""
        query = select(OutboxMessage.client_message_id, OutboxMessage.accepted_at).where(
            OutboxMessage.client_message_id.in_(self.committed),
            OutboxMessage.accepted_at.is_not(None),
        )
        with self.engine.connect() as connection:
            accepted: dict[str, datetime] = {
                cmid: at for cmid, at in connection.execute(query) if at is not None
            }
        return sorted(
            (accepted[cmid] - at).total_seconds() * 1000
            for cmid, at in self.committed.items()
            if cmid in accepted
        )
