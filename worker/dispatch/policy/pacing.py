"""Per-recipient pacing: at most one message to a recipient per interval, across every worker.

``outbox_recipient_pacing`` keeps when each recipient's last message was booked to go. A worker
books its batch's recipients in one conditional statement (``Database.book_recipients``): a
recipient's time moves forward only where the interval has passed since it was last booked, so
of two workers booking one recipient at once exactly one gets it (the row lock orders them). A
message whose recipient was not booked waits until the interval has passed.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from models.databases import DATABASES, Database, database_of
from models.suppressions import outbox_recipient_pacing as pacing


def _last_booked(database: Database) -> Any:
    """When each of some recipients was last booked."""
    recipient = pacing.c.recipient
    return select(recipient, pacing.c.sent_at).where(database.one_of(recipient, "recipients"))


# Built once per database: building them costs more than running them.
LAST_BOOKED = {database: _last_booked(database) for database in DATABASES}


def book(
    connection: Connection, recipients: Collection[str], now: datetime, interval: timedelta
) -> tuple[set[str], dict[str, datetime]]:
    """Book a send to each of ``recipients`` at ``now``, in one statement: those booked, and
    for the others when they may go (their last booking plus ``interval``)."""
    if not recipients:
        return set(), {}
    ordered = sorted(recipients)  # one lock order for every worker: no deadlock between two
    database = database_of(connection)
    booked = database.book_recipients(connection, ordered, now, now - interval)
    waiting = [recipient for recipient in ordered if recipient not in booked]
    if not waiting:
        return booked, {}
    last = connection.execute(LAST_BOOKED[database], {"recipients": waiting})
    return booked, {recipient: sent_at + interval for recipient, sent_at in last}
