"""Reports stored under a span of their own, linked to the producers' contexts of their messages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, select

from models.databases import Database, database_of
from models.outbox import outbox_messages as outbox
from worker.reports.parsing import Report
from worker.reports.storage import Stored, store_reports
from worker.tracing import reports_span


# -- traced_messages -- The id and trace context of each message holding one of the tracking
# ids (through the tracking id's partial index); messages without a context are left out. The
# context comes raw, as the claim reads it: on SQLite, plain SQL may have stored text that is
# not UTF-8, which must be left out of the links, not fail the body of reports.
def traced_messages(database: Database, tracking_ids: Sequence[str]) -> Select[Any]:
    trace = database.raw_text(outbox.c.trace_context).label("trace_context")
    return select(outbox.c.id, trace).where(
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
                statement = traced_messages(database_of(connection), tracking_ids)
                link(connection.execute(statement).all())
    return stored
