"""Spans recorded in memory by the OpenTelemetry SDK, for the tests of the outbox's traces.

OpenTelemetry takes one global tracer provider per process: the first test that asks installs
one that keeps every span in memory, and each test starts from an empty record.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from worker import tracing

_EXPORTER = InMemorySpanExporter()
_installed: list[TracerProvider] = []


def _provider() -> TracerProvider:
    if not _installed:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
        _installed.append(provider)
    return _installed[0]


class Recorded:
    """The spans finished since the test began, by name."""

    tracer = property(lambda self: _provider().get_tracer("tests"))

    def all(self) -> list[ReadableSpan]:
        return list(_EXPORTER.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.all() if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, [span.name for span in self.all()]
        return found[0]


@contextmanager
def recorded_spans() -> Iterator[Recorded]:
    """Tracing on, every span kept in memory, for the block; off again after it."""
    _provider()
    _EXPORTER.clear()
    tracing._decided.clear()
    try:
        yield Recorded()
    finally:
        tracing._decided[tracing.NAME] = None  # off again for the tests that follow
        _EXPORTER.clear()
