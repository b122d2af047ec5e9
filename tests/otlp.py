"""A real OTLP/HTTP receiver on localhost: what the outbox's processes export, decoded and kept.

It answers ``POST /v1/traces`` as a collector does, with protobuf (the SDK exporter's default)
or JSON bodies, and keeps each span with its parent and its links, so tests can follow a
message from its enqueue to its batch and its delivery report.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.json_format import MessageToDict, Parse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class Link:
    trace_id: str
    span_id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Span:
    """One exported span, ids as hex."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: tuple[Link, ...] = ()


@dataclass
class Received:
    """Every span received so far (thread-safe)."""

    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def named(self, name: str) -> list[Span]:
        with self.lock:
            return [span for span in self.spans if span.name == name]

    def add(self, request: ExportTraceServiceRequest) -> None:
        found = list(_spans(request))
        with self.lock:
            self.spans.extend(found)


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def _spans(request: ExportTraceServiceRequest) -> Iterator[Span]:
    for resource_spans in request.resource_spans:
        service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                links = tuple(
                    Link(link.trace_id.hex(), link.span_id.hex(), _attributes(link.attributes))
                    for link in span.links
                )
                yield Span(
                    service=service,
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    attributes=_attributes(span.attributes),
                    links=links,
                )


def _from_json(body: bytes) -> ExportTraceServiceRequest:
    """OTLP/JSON: ids are hex strings there, where protobuf's JSON mapping expects base64."""
    document = json.loads(body)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for holder in (span, *span.get("links", [])):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if holder.get(key):
                            holder[key] = _hex_to_base64(holder[key])
    request = ExportTraceServiceRequest()
    Parse(json.dumps(document), request)
    return request


def _hex_to_base64(value: str) -> str:
    import base64

    return base64.b64encode(bytes.fromhex(value)).decode()


def _handler(received: Received) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            json_body = self.headers.get("Content-Type", "").startswith("application/json")
            request = ExportTraceServiceRequest()
            if json_body:
                request = _from_json(body)
            else:
                request.ParseFromString(body)
            received.add(request)
            answer = ExportTraceServiceResponse()
            payload = (
                json.dumps(MessageToDict(answer)).encode()
                if json_body
                else answer.SerializeToString()
            )
            self.send_response(200)
            self.send_header("Content-Type", self.headers.get("Content-Type", ""))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_: object) -> None:
            pass

    return Handler


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, Received]]:
    """A receiver on a free localhost port: its endpoint (for OTEL_EXPORTER_OTLP_ENDPOINT) and
    what it received."""
    received = Received()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(received))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
