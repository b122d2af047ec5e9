"""The opt-out list as the worker reads it, and the rule that adds a recipient from reports."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Connection, bindparam, select

from models import DeliveryStatus, Scope
from models.databases import database_of
from models.outbox import outbox_messages as outbox
from models.suppressions import Source
from models.suppressions import outbox_suppressions as suppressions

_LOOK_UP = select(suppressions.c.recipient, suppressions.c.scope, suppressions.c.reason).where(
    suppressions.c.recipient.in_(bindparam("recipients", expanding=True))
)


def opted_out(connection: Connection, recipients: Collection[str]) -> dict[str, tuple[Scope, str]]:
    """Each of ``recipients`` on the opt-out list, with its scope and reason."""
    if not recipients:
        return {}
    rows = connection.execute(_LOOK_UP, {"recipients": sorted(recipients)}).all()
    found = {}
    for recipient, scope, reason in rows:
        try:
            found[recipient] = (Scope(scope), reason)
        except ValueError:  # written by hand with an unknown scope: the widest reading
            found[recipient] = (Scope.ALL_LANES, reason)
    return found


def _last_statuses(connection: Connection, recipient: str, count: int) -> list[object]:
    """The delivery statuses of ``recipient``'s ``count`` latest reported messages."""
    query = (
        select(outbox.c.delivery_status)
        .where(outbox.c.recipient == recipient, outbox.c.delivery_status.is_not(None))
        .order_by(outbox.c.id.desc())
        .limit(count)
    )
    return list(connection.scalars(query).all())


def add_after_not_delivered(
    connection: Connection, recipients: Collection[str], count: int, now: datetime
) -> dict[str, tuple[Scope, str]]:
    """Put on the list (source ``reports``) each recipient whose ``count`` latest reports are
    all NOT_DELIVERED; returns those added."""
    added = {}
    for recipient in sorted(recipients):
        statuses = _last_statuses(connection, recipient, count)
        if len(statuses) == count and all(s == DeliveryStatus.NOT_DELIVERED for s in statuses):
            reason = f"{count} NOT_DELIVERED reports in a row"
            added[recipient] = (Scope.CAMPAIGNS, reason)
    if added:
        insert = database_of(connection).insert(suppressions)
        rows = [
            {
                "recipient": recipient,
                "scope": Scope.CAMPAIGNS.value,
                "reason": reason,
                "source": Source.REPORTS.value,
                "created_at": now,
            }
            for recipient, (_, reason) in added.items()
        ]
        connection.execute(insert.on_conflict_do_nothing(index_elements=["recipient"]), rows)
    return added
