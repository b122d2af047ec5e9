"""How long delivery reports are kept: with their message, or unmatched for a window.

A matched report is deleted in the same transaction as its message (the prune's chunk), so no
report outlives its message. A report no message holds (other traffic on the Wiraya account,
or a made-up tracking id) is deleted once it is older than
OUTBOX_UNMATCHED_REPORT_RETENTION_SECONDS, in bounded chunks like the messages' prune. On
PostgreSQL a chunk skips reports that a record's trigger is matching at that moment (they
are matched, not stale), so a prune never waits for a record, nor a record for a prune.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, select

from models import outbox_delivery_reports as reports


def delete_reports_of(connection: Connection, message_ids: Sequence[int]) -> int:
    """Delete every report of these messages (the prune's chunk deleting them)."""
    if not message_ids:
        return 0
    statement = delete(reports).where(reports.c.message_id.in_(message_ids))
    return len(connection.execute(statement.returning(reports.c.id)).all())


def prune_unmatched(connection: Connection, *, cutoff: datetime, chunk: int) -> int:
    """Delete up to ``chunk`` unmatched reports received before ``cutoff``, oldest first; callers
    repeat until fewer than ``chunk`` go."""
    stale = (reports.c.message_id.is_(None), reports.c.received_at < cutoff)
    chosen = (
        select(reports.c.id)
        .where(*stale)
        .order_by(reports.c.received_at, reports.c.id)
        .limit(chunk)
        .with_for_update(skip_locked=True)
        .cte("chosen")
    )
    statement = delete(reports).where(reports.c.id.in_(select(chosen.c.id)), *stale)
    return len(connection.execute(statement.returning(reports.c.id)).all())
