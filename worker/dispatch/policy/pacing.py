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

from models.databases import DATABASES, Database, database_of
from models.suppressions import outbox_recipient_pacing as pacing


def _booking(database: Database) -> Any:
    """One INSERT for every recipient of a batch (its rows sent as one multi-row statement);
    an existing recipient's time moves only where it is at or before the row's cutoff."""
    insert: Any = database.insert(pacing)
    return insert.on_conflict_do_update(
        index_elements=["recipient"],
        set_={"sent_at": insert.excluded.sent_at},
        where=pacing.c.sent_at <= bindparam("cutoff", type_=pacing.c.sent_at.type),
    ).returning(pacing.c.recipient)


def _last_booked(database: Database) -> Any:
    """When each of some recipients was last booked."""
    recipient = pacing.c.recipient
    return select(recipient, pacing.c.sent_at).where(database.one_of(recipient, "recipients"))


# Built once per database: building them costs more than running them.
BOOKINGS = {database: _booking(database) for database in DATABASES}
LAST_BOOKED = {database: _last_booked(database) for database in DATABASES}


def book(
    connection: Connection, recipients: Collection[str], now: datetime, interval: timedelta
) -> tuple[set[str], dict[str, datetime]]:
    """Book a send to each of ``recipients`` at ``now``, in one statement: those booked, and
    for the others when they may go (their last booking plus ``interval``)."""
    if not recipients:
        return set(), {}
    ordered = sorted(recipients)  # one lock order for every worker: no deadlock between two
    cutoff = now - interval
    rows = [{"recipient": to, "sent_at": now, "cutoff": cutoff} for to in ordered]
    statement = BOOKINGS[database_of(connection)]
    booked = set(connection.scalars(statement, rows).all())
    waiting = [recipient for recipient in ordered if recipient not in booked]
    if not waiting:
        return booked, {}
    last = connection.execute(LAST_BOOKED[database_of(connection)], {"recipients": waiting})
    return booked, {recipient: sent_at + interval for recipient, sent_at in last}
