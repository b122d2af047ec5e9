"""The OpenTelemetry SDK set up from the OTEL_* variables; imported only when tracing is on.

The exporters named by ``OTEL_TRACES_EXPORTER`` (``otlp``, the default, over HTTP/protobuf; or
``console``) behind a batching processor; the resource from ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` (``service.name`` defaults to ``wiraya-outbox``); the sampler from
``OTEL_TRACES_SAMPLER``; the OTLP endpoint, headers and timeout from ``OTEL_EXPORTER_OTLP_*``:
each read by the SDK itself.
"""

from __future__ import annotations

import logging
import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

log = logging.getLogger(__name__)
EXPORTERS = ("otlp", "console")


def install(name: str) -> trace.Tracer | None:
    """This process's tracer provider, installed globally; None when the variables are wrong."""
    try:
        exporters = [_exporter(chosen) for chosen in _chosen()]
    except ValueError as error:
        log.error("tracing stays off: %s", error)
        return None
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or name})
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider.get_tracer(name)


def _chosen() -> list[str]:
    named = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    return [part.strip().lower() for part in named.split(",") if part.strip()]


def _exporter(chosen: str) -> SpanExporter:
    if chosen == "console":
        return ConsoleSpanExporter()
    if chosen != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER: {chosen!r} is not one of {', '.join(EXPORTERS)}")
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if protocol.strip() not in ("", "http/protobuf"):
        raise ValueError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf is built in, not {protocol!r}"
        )
    return OTLPSpanExporter()
