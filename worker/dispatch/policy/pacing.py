"""Per-recipient pacing: at most one message to a recipient per interval, across every worker.

``outbox_recipient_pacing`` keeps when each recipient's last message was booked to go. A worker
books its batch's recipients in one conditional statement: a recipient's time moves forward only
where the interval has passed since it was last booked, so of two workers booking one
recipient at once exactly one gets it (the row lock orders them). A message whose recipient was
not booked waits until the interval has passed.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, select

from models.databases import database_of
from models.suppressions import outbox_recipient_pacing as pacing

_LAST_SENT = select(pacing.c.recipient, pacing.c.sent_at).where(
    pacing.c.recipient.in_(bindparam("recipients", expanding=True))
)


def _booking(connection: Connection, rows: list[dict[str, Any]]) -> Any:
    """One INSERT of every row; an existing recipient's time moves only past the cutoff."""
    insert: Any = database_of(connection).insert(pacing).values(rows)
    return insert.on_conflict_do_update(
        index_elements=["recipient"],
        set_={"sent_at": insert.excluded.sent_at},
        where=pacing.c.sent_at <= bindparam("cutoff", type_=pacing.c.sent_at.type),
    ).returning(pacing.c.recipient)


def book(
    connection: Connection, recipients: Collection[str], now: datetime, interval: timedelta
) -> tuple[set[str], dict[str, datetime]]:
    """Book a send to each of ``recipients`` at ``now``, in one statement: those booked, and
    for the others when they may go (their last booking plus ``interval``)."""
    if not recipients:
        return set(), {}
    ordered = sorted(recipients)  # one lock order for every worker: no deadlock between two
    rows = [{"recipient": recipient, "sent_at": now} for recipient in ordered]
    result = connection.execute(_booking(connection, rows), {"cutoff": now - interval})
    booked = set(result.scalars().all())
    waiting = [recipient for recipient in ordered if recipient not in booked]
    if not waiting:
        return booked, {}
    last = connection.execute(_LAST_SENT, {"recipients": waiting}).all()
    return booked, {recipient: sent_at + interval for recipient, sent_at in last}
