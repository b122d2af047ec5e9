"""Reports stored under a span of their own, linked to the producers' contexts of their messages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, select

from models.outbox import outbox_messages as outbox
from worker.reports.parsing import Report
from worker.reports.storage import Stored, store_reports
from worker.tracing import reports_span


# -- traced_messages -- The id and trace context of each message holding one of the tracking
# ids (through the tracking id's partial index); messages without a context are left out.
def traced_messages(tracking_ids: Sequence[str]) -> Select[Any]:
    return select(outbox.c.id, outbox.c.trace_context).where(
        outbox.c.tracking_id.in_(tracking_ids), outbox.c.trace_context.is_not(None)
    )


def store_traced(engine: Engine, reports: Sequence[Report], *, received_at: datetime) -> Stored:
    """store_reports, in a span linked to the matched messages when tracing is on (one more
    query then; none, and nothing of OpenTelemetry loaded, when it is off)."""
    with reports_span(len(reports)) as link:
        stored = store_reports(engine, reports, received_at=received_at)
        if link is not None and stored.matched:
            tracking_ids = sorted({report.tracking_id for report in reports})
            with engine.connect() as connection:
                link(connection.execute(traced_messages(tracking_ids)).all())
    return stored
