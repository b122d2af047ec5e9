"""Traces from one enqueue to its batch and its delivery report, exported by the real worker and
receiver processes over OTLP/HTTP to a real receiver on localhost (tests/otlp.py).

The test process enqueues inside a span of its own; the worker's batch span must link to that
span, its HTTP call be the batch span's child, and the receiver's handling of the message's
report link to the same span.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import urllib.request
from dataclasses import asdict
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from sqlalchemy import text
from sqlalchemy.orm import Session

from models import SMSProject, enqueue
from tests.e2e.harness import Stack, http_get, ordinary_recipient
from tests.otlp import Received, Span, otlp_receiver
from tests.spans import recorded_spans
from worker.ops.processes import free_port, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(180)]

OUTBOX = str(Path(sys.executable).with_name("outbox"))
AUTH = "wiraya:7d41c09e2b6a85f3"
SPANS_FILE = "OUTBOX_TRACE_SPANS"  # where to write the spans followed (tests/e2e/trace_picture.py)


def keep(path: Path, producer: ReadableSpan, exported: list[Span]) -> None:
    """The producer's span (in memory) and the exported ones, as trace_picture.py reads them."""
    context = producer.context
    assert context is not None and producer.start_time and producer.end_time
    first = Span(
        service="your application",
        name=producer.name,
        trace_id=format(context.trace_id, "032x"),
        span_id=format(context.span_id, "016x"),
        parent_span_id="",
        start_ns=producer.start_time,
        end_ns=producer.end_time,
        attributes={},
    )
    path.write_text(json.dumps([asdict(span) for span in [first, *exported]], indent=1))


def traced(endpoint: str, service: str) -> dict[str, str]:
    """The standard OTEL_* variables of a process exporting to ``endpoint``, flushed quickly."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


def linking(received: Received, name: str, trace_id: str, span_id: str) -> Span | None:
    """The first span called ``name`` with a link to (trace_id, span_id), if any yet."""
    for span in received.named(name):
        if any((link.trace_id, link.span_id) == (trace_id, span_id) for link in span.links):
            return span
    return None


def post_report(url: str, tracking_id: str) -> int:
    body = json.dumps([{"trackingId": tracking_id, "status": "DELIVERED"}]).encode()
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", "Basic " + base64.b64encode(AUTH.encode()).decode())
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status)


def test_one_enqueue_is_linked_from_its_batch_and_its_report(stack: Stack) -> None:
    with otlp_receiver() as (endpoint, received), recorded_spans() as spans:
        stack.start_sandbox()
        with (
            spans.tracer.start_as_current_span("place order") as producer,
            Session(stack.engine) as session,
            session.begin(),
        ):
            content = SMSProject(project_id=123, placeholders=["Ada", "Order #1"])
            enqueue(session, recipient=ordinary_recipient(1), content=content)
        trace_id = format(producer.get_span_context().trace_id, "032x")
        span_id = format(producer.get_span_context().span_id, "016x")

        stack.start_worker(**traced(endpoint, "outbox-worker"))
        stack.start_beat(**traced(endpoint, "outbox-worker"))
        stack.wait_all_final(1, timeout=60)
        with stack.engine.connect() as connection:
            tracking_id = connection.scalar(text("SELECT tracking_id FROM outbox_messages"))
        assert tracking_id is not None

        batch = wait_for(
            lambda: linking(received, "outbox.send", trace_id, span_id),
            timeout=30,
            what="the batch's span, linked to the enqueue",
        )
        assert batch.service == "outbox-worker"
        assert batch.attributes["outbox.lane"] == "normal"
        assert batch.attributes["outbox.accepted"] == 1
        assert batch.trace_id != trace_id  # a trace of its own, linked: not a child
        request = wait_for(
            lambda: next(
                (
                    s
                    for s in received.named("POST EnqueueCommunications")
                    if s.parent_span_id == batch.span_id
                ),
                None,
            ),
            timeout=30,
            what="the HTTP call's span, a child of the batch's",
        )
        assert request.attributes["http.response.status_code"] == 200

        port = free_port()
        env = stack.worker_env(OUTBOX_CALLBACK_AUTH=AUTH, **traced(endpoint, "outbox-receiver"))
        argv = [OUTBOX, "receiver", "--host", "127.0.0.1", "--port", str(port)]
        stack._service("receiver", argv, env).start()
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(f"{base}/health")[0] == 200, timeout=30, what="the receiver")
        assert post_report(f"{base}/wiraya/callbacks", tracking_id) == 200

        report = wait_for(
            lambda: linking(received, "outbox.delivery_reports", trace_id, span_id),
            timeout=30,
            what="the report's span, linked to the enqueue",
        )
        assert report.service == "outbox-receiver"
        assert report.attributes["outbox.linked_messages"] == 1
        if os.environ.get(SPANS_FILE):  # the spans behind docs/tracing.md's picture
            producer_span = spans.one("place order")
            keep(Path(os.environ[SPANS_FILE]), producer_span, [batch, request, report])
