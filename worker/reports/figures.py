"""What operators read about delivery: counts by delivery status, unmatched reports, a message's
reports. Every statement serves PostgreSQL and SQLite alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from models import DeliveryStatus, Status, outbox_delivery_reports
from models.outbox import outbox_messages as outbox
from models.text import escaped

reports = outbox_delivery_reports
# What a scrape and `outbox stats` count of unmatched reports at most: the count reads at
# most this many index entries whatever the table holds.
UNMATCHED_COUNTED = 10_000
AWAITING = "awaiting report"


@dataclass(frozen=True)
class DeliveryFigures:
    """Accepted messages by their latest report, and reports no message holds (yet)."""

    by_status: dict[str, int]  # every known status (zeros included), then any other seen
    awaiting: int  # accepted, no report yet
    unmatched_reports: int  # counted up to UNMATCHED_COUNTED

    def to_json(self) -> dict[str, Any]:
        return {
            "by_status": self.by_status,
            "awaiting_report": self.awaiting,
            "unmatched_reports": self.unmatched_reports,
        }

    def lines(self) -> list[str]:
        """The lines `outbox stats` prints: non-zero statuses, what waits, what is unmatched."""
        shown = [(status, count) for status, count in self.by_status.items() if count]
        shown.append((AWAITING, self.awaiting))
        rows = [f"  {escaped(status):<16} {count:>10,}" for status, count in shown]
        unmatched = f"{self.unmatched_reports:,}"
        if self.unmatched_reports >= UNMATCHED_COUNTED:
            unmatched += "+"  # counted no further
        rows.append(f"  {'unmatched':<16} {unmatched:>10}   (reports, no message yet)")
        return rows


# -- delivery_counts -- Accepted messages by delivery status (None: no report yet).
def delivery_counts(connection: Connection) -> dict[str | None, int]:
    statement = (
        select(outbox.c.delivery_status, func.count())
        .where(outbox.c.status == Status.ACCEPTED)
        .group_by(outbox.c.delivery_status)
    )
    return {status: int(count) for status, count in connection.execute(statement)}


# -- unmatched_count -- Reports whose tracking id no message holds, counted up to
# UNMATCHED_COUNTED (served by a partial index).
def unmatched_count(connection: Connection) -> int:
    first = (
        select(reports.c.id)
        .where(reports.c.message_id.is_(None))
        .limit(UNMATCHED_COUNTED)
        .subquery()
    )
    return int(connection.scalar(select(func.count()).select_from(first)) or 0)


# -- reports_of -- Every report naming a tracking id, oldest event first.
def reports_of(connection: Connection, tracking_id: str) -> list[dict[str, Any]]:
    event = func.coalesce(reports.c.done_at, reports.c.received_at)
    statement = (
        select(reports.c.status, reports.c.done_at, reports.c.received_at, reports.c.report)
        .where(reports.c.tracking_id == tracking_id)
        .order_by(event, reports.c.id)
    )
    return [dict(row._mapping) for row in connection.execute(statement)]


def delivery_figures(engine: Engine) -> DeliveryFigures:
    """Counts by delivery status and unmatched reports, read in one transaction."""
    with engine.begin() as connection:
        counts = delivery_counts(connection)
        unmatched = unmatched_count(connection)
    by_status = {status.value: counts.pop(status.value, 0) for status in DeliveryStatus}
    awaiting = counts.pop(None, 0)
    by_status.update({str(status): count for status, count in sorted(counts.items(), key=str)})
    return DeliveryFigures(by_status, awaiting, unmatched)


def message_reports(engine: Engine, tracking_id: str | None) -> list[dict[str, Any]]:
    """A message's reports (none before it has a tracking id)."""
    if tracking_id is None:
        return []
    with engine.begin() as connection:
        return reports_of(connection, tracking_id)
