"""The opt-out list from Python and the CLI: add, remove and list suppressed recipients.

Recipients are normalised as ``enqueue`` normalises them, so ``+46 70-123 45 67`` and
``46701234567`` are one entry. Adding a recipient already listed replaces its scope and reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select

from models import Scope, normalize_recipient
from models.databases import database_of
from models.suppressions import Source
from models.suppressions import outbox_suppressions as suppressions
from models.text import clean


@dataclass(frozen=True)
class Suppression:
    """One recipient on the opt-out list."""

    recipient: str
    scope: str
    reason: str
    source: str
    created_at: datetime | None


def suppress(
    connection: Connection,
    recipient: object,
    *,
    reason: str = "",
    all_lanes: bool = False,
    source: Source = Source.OPERATOR,
) -> str:
    """Put ``recipient`` on the list (normal and bulk, or every lane); returns it normalised."""
    number = normalize_recipient(recipient)
    scope = Scope.ALL_LANES if all_lanes else Scope.CAMPAIGNS
    values = {
        "recipient": number,
        "scope": scope.value,
        "reason": clean(reason),
        "source": source.value,
    }
    insert: Any = database_of(connection).insert(suppressions).values(values)
    connection.execute(
        insert.on_conflict_do_update(
            index_elements=["recipient"],
            set_={
                "scope": insert.excluded.scope,
                "reason": insert.excluded.reason,
                "source": insert.excluded.source,
                "created_at": func.now(),
            },
        )
    )
    return number


def unsuppress(connection: Connection, recipient: object) -> bool:
    """Take ``recipient`` off the list; False when it was not on it."""
    number = normalize_recipient(recipient)
    result = connection.execute(delete(suppressions).where(suppressions.c.recipient == number))
    return bool(result.rowcount)


def suppressed(connection: Connection) -> list[Suppression]:
    """Every listed recipient, the newest first."""
    query = select(
        suppressions.c.recipient,
        suppressions.c.scope,
        suppressions.c.reason,
        suppressions.c.source,
        suppressions.c.created_at,
    ).order_by(suppressions.c.created_at.desc(), suppressions.c.recipient)
    return [Suppression(*row) for row in connection.execute(query)]
