"""The opt-out list as the worker reads it, and the rule that adds a recipient from reports."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Integer, Select, bindparam, func, select

from models import DeliveryStatus, Scope
from models.databases import DATABASES, Database, database_of
from models.outbox import outbox_messages as outbox
from models.suppressions import Source
from models.suppressions import outbox_suppressions as suppressions


def _look_up(database: Database) -> Select[Any]:
    """The listed among a batch's recipients, with their scope and reason."""
    columns = (suppressions.c.recipient, suppressions.c.scope, suppressions.c.reason)
    return select(*columns).where(database.one_of(suppressions.c.recipient, "recipients"))


def _latest_statuses(database: Database) -> Select[Any]:
    """The delivery statuses of each recipient's ``count`` latest reported messages, in one
    statement (a window over the recipient index)."""
    rank = (
        func.row_number()
        .over(partition_by=outbox.c.recipient, order_by=outbox.c.id.desc())
        .label("rank")
    )
    latest = (
        select(outbox.c.recipient, outbox.c.delivery_status, rank)
        .where(
            database.one_of(outbox.c.recipient, "recipients"),
            outbox.c.delivery_status.is_not(None),
        )
        .subquery()
    )
    return select(latest.c.recipient, latest.c.delivery_status).where(
        latest.c.rank <= bindparam("count", type_=Integer())
    )


# Built once per database: they run for every batch.
LOOK_UPS = {database: _look_up(database) for database in DATABASES}
LATEST_STATUSES = {database: _latest_statuses(database) for database in DATABASES}


def opted_out(connection: Connection, recipients: Collection[str]) -> dict[str, tuple[Scope, str]]:
    """Each of ``recipients`` on the opt-out list, with its scope and reason."""
    if not recipients:
        return {}
    statement = LOOK_UPS[database_of(connection)]
    rows = connection.execute(statement, {"recipients": sorted(recipients)}).all()
    found = {}
    for recipient, scope, reason in rows:
        try:
            found[recipient] = (Scope(scope), reason)
        except ValueError:  # written by hand with an unknown scope: the widest reading
            found[recipient] = (Scope.ALL_LANES, reason)
    return found


def _last_statuses(
    connection: Connection, recipients: Collection[str], count: int
) -> dict[str, list[object]]:
    """Each recipient's latest ``count`` delivery statuses, the newest first."""
    statement = LATEST_STATUSES[database_of(connection)]
    found: dict[str, list[object]] = {}
    parameters = {"recipients": sorted(recipients), "count": count}
    for recipient, status in connection.execute(statement, parameters):
        found.setdefault(recipient, []).append(status)
    return found


def add_after_not_delivered(
    connection: Connection, recipients: Collection[str], count: int, now: datetime
) -> dict[str, tuple[Scope, str]]:
    """Put on the list (source ``reports``) each recipient whose ``count`` latest reports are
    all NOT_DELIVERED; returns those added."""
    if not recipients:
        return {}
    added = {}
    latest = _last_statuses(connection, recipients, count)
    for recipient in sorted(recipients):
        statuses = latest.get(recipient, [])
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
