"""Traces from enqueue to delivery report, recorded in memory on PostgreSQL and SQLite.

The producer's span is stored with each message; the batch that sends it links to it, the
HTTP call is the batch's child, and the handling of its delivery report links to it again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from models import enqueue
from tests.integration.dispatch.harness import ALPHA, Outbox, recipient
from tests.spans import recorded_spans
from worker.reports.parsing import Report
from worker.reports.traces import store_traced


def linked_messages(span: object) -> dict[int, tuple[int, int]]:
    """The message ids a span links to, each with the (trace id, span id) it links."""
    return {
        int(link.attributes["outbox.message_id"]): (link.context.trace_id, link.context.span_id)
        for link in span.links  # type: ignore[attr-defined]
    }


def test_a_batch_links_to_each_producer_and_a_report_to_its_message(outbox: Outbox) -> None:
    with recorded_spans() as spans:
        tracer = spans.tracer
        contexts = {}
        for number in range(2):
            with (
                tracer.start_as_current_span(f"request {number}") as span,
                Session(outbox.engine) as session,
                session.begin(),
            ):
                row = enqueue(session, recipient=recipient(number), content=ALPHA)
                contexts[row.id] = span.get_span_context()
        summary = outbox.dispatcher().dispatch_once()
        assert summary.accepted == 2

        batch = spans.one("outbox.send")
        expected = {key: (c.trace_id, c.span_id) for key, c in contexts.items()}
        assert linked_messages(batch) == expected
        assert batch.attributes["outbox.lane"] == "normal"
        assert batch.attributes["outbox.tenant"] == ""
        assert batch.attributes["messaging.batch.message_count"] == 2
        assert (batch.attributes["outbox.accepted"], batch.attributes["outbox.failed"]) == (2, 0)
        request = spans.one("POST EnqueueCommunications")
        assert request.parent is not None and request.parent.span_id == batch.context.span_id
        assert request.attributes["http.response.status_code"] == 200

        first = min(contexts)
        with outbox.engine.connect() as connection:
            tracking_id = connection.scalar(
                text("SELECT tracking_id FROM outbox_messages WHERE id = :id"), {"id": first}
            )
        report = Report(tracking_id, "DELIVERED", None, "{}")
        stored = store_traced(outbox.engine, [report], received_at=datetime.now(UTC))
        assert stored.matched == 1
        handled = spans.one("outbox.delivery_reports")
        assert linked_messages(handled) == {first: expected[first]}


def test_without_a_span_nothing_is_stored_and_nothing_linked(outbox: Outbox) -> None:
    with recorded_spans() as spans:
        outbox.enqueue_ordinary(1)
        with outbox.engine.connect() as connection:
            stored = connection.scalar(text("SELECT trace_context FROM outbox_messages"))
        assert stored is None
        assert outbox.dispatcher().dispatch_once().accepted == 1
        assert spans.one("outbox.send").links == ()


@pytest.mark.parametrize(
    "hostile", ["00-zz", "00-" + "0" * 32 + "-" + "1" * 16 + "-01", "x" * 10_000, "\u0000"]
)
def test_a_hostile_context_from_plain_sql_is_left_out_with_a_reason(
    outbox: Outbox, hostile: str, caplog: pytest.LogCaptureFixture
) -> None:
    outbox.insert_raw("raw-1", recipient(1), ALPHA)
    outbox.enqueue_ordinary(1)
    hostile = hostile.replace("\u0000", "\x01")  # what either database keeps in text
    with outbox.engine.begin() as connection:
        connection.execute(
            text("UPDATE outbox_messages SET trace_context = :value WHERE client_message_id = :id"),
            {"value": hostile, "id": "raw-1"},
        )
    with recorded_spans() as spans, caplog.at_level(logging.WARNING, "worker.tracing"):
        summary = outbox.dispatcher().dispatch_once()
        assert summary.accepted == 2  # the batch went out whole
        assert spans.one("outbox.send").links == ()
    assert "trace contexts not linked (message" in caplog.text
    assert "trace_context: must start with a W3C traceparent" in caplog.text


def test_tracing_off_makes_no_span_and_loads_nothing(outbox: Outbox) -> None:
    outbox.enqueue_ordinary(1)
    with recorded_spans() as spans:
        from worker import tracing

        tracing._decided[tracing.NAME] = None
        assert outbox.dispatcher().dispatch_once().accepted == 1
        assert spans.all() == []


def test_a_context_that_is_not_utf8_on_sqlite_neither_stalls_a_batch_nor_its_reports(
    outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    if outbox.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's text holds UTF-8 only")
    outbox.insert_raw("raw-1", recipient(1), ALPHA)
    with outbox.engine.begin() as connection:  # plain SQL can store any bytes as text
        connection.execute(text("UPDATE outbox_messages SET trace_context = CAST(X'FF00' AS TEXT)"))
    with recorded_spans() as spans, caplog.at_level(logging.WARNING, "worker.tracing"):
        assert outbox.dispatcher().dispatch_once().accepted == 1
        with outbox.engine.connect() as connection:
            tracking_id = connection.scalar(text("SELECT tracking_id FROM outbox_messages"))
        report = Report(tracking_id, "DELIVERED", None, "{}")
        stored = store_traced(outbox.engine, [report], received_at=datetime.now(UTC))
        assert stored.matched == 1  # stored, and answered: Wiraya does not send it again
        assert spans.one("outbox.delivery_reports").links == ()
    assert "trace contexts not linked (message" in caplog.text
