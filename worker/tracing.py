"""OpenTelemetry spans of the worker and the receiver: off, with nothing of OpenTelemetry loaded,
unless the standard ``OTEL_*`` variables (or the application itself) set tracing up.

Three spans, each linked to the producer's context of the messages it served (span links: one
batch serves many traces, and a delivery report arrives long after its producer's trace ended):

- ``outbox.send`` for one batch: its messages' contexts as links; tenant, lane, message count
  and outcome counts as attributes.
- ``POST EnqueueCommunications``, the batch's HTTP call, its child (the client's own span).
- ``outbox.delivery_reports`` for one body of reports the receiver stored, linked to the
  contexts of the messages they matched.

Tracing is on when an ``OTEL_TRACES_EXPORTER`` other than ``none`` or an ``OTEL_EXPORTER_OTLP_*``
endpoint is set (and ``OTEL_SDK_DISABLED`` is not ``true``): the SDK and its exporter are then set
up (worker/tracing_setup.py) in the process that makes its first span, after any fork. It is on
too when the application that runs the dispatcher or the receiver set a tracer provider itself.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, cast

from models.errors import InvalidMessage
from models.priority import Priority
from models.tenant import problem as tenant_problem
from models.trace_context import TraceContext, parse

if TYPE_CHECKING:
    from opentelemetry.trace import Link, Span, Tracer
    from opentelemetry.util.types import Attributes

log = logging.getLogger(__name__)
NAME = "wiraya-outbox"
OFF = ("none", "")
# Set once per process by tracer(): the tracer, or None when tracing is off.
_decided: dict[str, Tracer | None] = {}


class TracedRow(Protocol):
    """What a batch's span reads of a claimed row."""

    @property
    def id(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def trace_context(self) -> object: ...


class BatchOutcome(Protocol):
    """What a batch's span reads of its summary, once the batch is recorded."""

    accepted: int
    retried: int
    failed: int
    released: int
    requests: int
    alarm: str | None


def configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTEL_* variables ask for traces (an exporter, or an OTLP endpoint)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter not in OFF
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return any(environ.get(name, "").strip() for name in endpoints)


def tracer() -> Tracer | None:
    """This process's tracer, or None when tracing is off; decided at the first span."""
    if NAME not in _decided:
        _decided[NAME] = _decide()
    return _decided[NAME]


def _decide() -> Tracer | None:
    api = sys.modules.get("opentelemetry.trace")
    if api is not None and not isinstance(api.get_tracer_provider(), api.ProxyTracerProvider):
        return cast("Tracer", api.get_tracer(NAME))  # the application's own provider
    if not configured():
        return None
    try:
        from worker.tracing_setup import install
    except ImportError as error:
        log.error(
            "OTEL_* variables ask for traces, but OpenTelemetry is not installed (%s): "
            "pip install 'wiraya-outbox[tracing]'; sending goes on without traces",
            error,
        )
        return None
    return install(NAME)


def _tenant(raw: object) -> str:
    """The batch's tenant as a span attribute: its name when valid (a claimed row's is raw)."""
    if isinstance(raw, bytes | bytearray | memoryview):  # SQLite hands back bytes
        raw = bytes(raw).decode("utf-8", "replace")
    return raw if isinstance(raw, str) and tenant_problem(raw) is None else "invalid"


@contextmanager
def batch_span(rows: Sequence[TracedRow], outcome: BatchOutcome) -> Iterator[None]:
    """The span of one batch: linked to its messages' producers, its outcomes noted at the end."""
    found = tracer()
    if found is None:
        yield
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    lane = Priority(min(row.priority for row in rows)).name.lower()
    attributes: Attributes = {
        "outbox.tenant": _tenant(getattr(rows[0], "tenant", "")),
        "outbox.lane": lane,
        "messaging.system": "wiraya-outbox",
        "messaging.batch.message_count": len(rows),
    }
    links = _links((row.id, row.trace_context) for row in rows)
    with found.start_as_current_span(
        "outbox.send", kind=SpanKind.CONSUMER, links=links, attributes=attributes
    ) as span:
        yield
        span.set_attributes(
            {
                "outbox.accepted": outcome.accepted,
                "outbox.retried": outcome.retried,
                "outbox.failed": outcome.failed,
                "outbox.released": outcome.released,
                "outbox.requests": outcome.requests,
            }
        )
        if outcome.alarm:
            span.set_status(Status(StatusCode.ERROR, outcome.alarm))


@contextmanager
def request_span(url: str, messages: int) -> Iterator[Span | None]:
    """The span of one EnqueueCommunications request (a child of the batch's span)."""
    found = tracer()
    if found is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    attributes: Attributes = {
        "http.request.method": "POST",
        "url.full": url,
        "messaging.batch.message_count": messages,
    }
    with found.start_as_current_span(
        "POST EnqueueCommunications", kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield span


def note_answer(span: Span | None, status: int | None, outcome: str) -> None:
    """What the request's answer was: its HTTP status (None without an answer) and its kind."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    if status is not None:
        span.set_attribute("http.response.status_code", status)
    span.set_attribute("outbox.result", outcome)
    if outcome != "Delivered":
        span.set_status(Status(StatusCode.ERROR, outcome))


@contextmanager
def reports_span(reports: int) -> Iterator[Callable[[Iterable[tuple[int, object]]], None] | None]:
    """The span of one body of reports the receiver stores; what it yields (None when tracing
    is off) links it to the contexts of the messages the reports matched."""
    found = tracer()
    if found is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    with found.start_as_current_span(
        "outbox.delivery_reports", kind=SpanKind.SERVER, attributes={"outbox.reports": reports}
    ) as span:

        def link(contexts: Iterable[tuple[int, object]]) -> None:
            links = _links(contexts)
            for each in links:
                span.add_link(each.context, each.attributes)
            span.set_attribute("outbox.linked_messages", len(links))

        yield link


def _links(contexts: Iterable[tuple[int, object]]) -> list[Link]:
    """Links to the valid stored contexts; an invalid one is left out, with one line saying why."""
    from opentelemetry.trace import Link

    links: list[Link] = []
    ignored: list[str] = []
    for message_id, stored in contexts:
        if stored is None:
            continue
        try:
            context = parse(stored.decode() if isinstance(stored, bytes) else stored)
        except (InvalidMessage, UnicodeDecodeError) as error:
            ignored.append(f"message {message_id}: {error}")
            continue
        links.append(Link(_span_context(context), {"outbox.message_id": message_id}))
    if ignored:
        log.warning(
            "%d trace contexts not linked (%s%s)",
            len(ignored),
            ignored[0],
            ", ..." if len(ignored) > 1 else "",
        )
    return links


def _span_context(context: TraceContext) -> Any:
    from opentelemetry.trace import SpanContext, TraceFlags, TraceState

    state = TraceState.from_header([context.tracestate]) if context.tracestate else None
    return SpanContext(
        context.trace_id,
        context.span_id,
        is_remote=True,
        trace_flags=TraceFlags(context.flags),
        trace_state=state,
    )
