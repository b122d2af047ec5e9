"""A message's W3C trace context: the caller's span at enqueue, as one text column holds it.

The column ``trace_context`` holds the ``traceparent`` header's value, then, when the caller's
context carries one, a space and the ``tracestate`` header's value (a traceparent holds no
space). It is written only while an OpenTelemetry span is active in the producer: this module
looks for one only when the application has loaded OpenTelemetry itself, so a producer without
it pays nothing and imports nothing.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from models.errors import InvalidMessage

FIELD = "trace_context"
# Version 00 of https://www.w3.org/TR/trace-context/: trace id, parent span id, flags; an all-zero
# id is invalid.
TRACEPARENT = re.compile(r"00-(?!0{32})([0-9a-f]{32})-(?!0{16})([0-9a-f]{16})-([0-9a-f]{2})")
# The header's own limit is 32 members; 512 characters is what propagators must keep at least.
MAX_TRACESTATE = 512
# key=value: a key of lowercase letters, digits and _-*/@; a value of printable ASCII but , and =.
TRACESTATE_MEMBER = re.compile(
    r"[a-z0-9][a-z0-9_\-*/@]{0,255}=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,256}"
)
SAMPLED = 0x01


@dataclass(frozen=True)
class TraceContext:
    """A parsed trace context: the ids a span link needs, and the vendors' tracestate."""

    trace_id: int
    span_id: int
    flags: int
    tracestate: str = ""

    @property
    def sampled(self) -> bool:
        """The caller's span was recorded (its trace flags' sampled bit)."""
        return bool(self.flags & SAMPLED)

    def stored(self) -> str:
        """The column's text: the traceparent, then the tracestate after a space if there is one."""
        parent = f"00-{self.trace_id:032x}-{self.span_id:016x}-{self.flags:02x}"
        return f"{parent} {self.tracestate}" if self.tracestate else parent


def parse(value: object) -> TraceContext:
    """A stored (or given) trace context, or InvalidMessage naming ``trace_context`` and why."""
    if not isinstance(value, str):
        raise InvalidMessage(FIELD, f"must be text, got {type(value).__name__}")
    parent, _, state = value.partition(" ")
    matched = TRACEPARENT.fullmatch(parent)
    if matched is None:
        raise InvalidMessage(
            FIELD, "must start with a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, ids not zero)"
        )
    state = state.strip(" \t")
    problem = _tracestate_problem(state)
    if problem is not None:
        raise InvalidMessage(FIELD, problem)
    trace_id, span_id, flags = matched.groups()
    return TraceContext(int(trace_id, 16), int(span_id, 16), int(flags, 16), state)


def checked(value: object) -> str | None:
    """What the producer stores: a given context validated, else the active span's (or None)."""
    if value is None:
        return active()
    return parse(value).stored()


def active() -> str | None:
    """The active OpenTelemetry span's context as the column holds it; None when no span is
    active, or when the application never loaded OpenTelemetry (then none can be)."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return None
    context = api.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    state = context.trace_state.to_header() if context.trace_state else ""
    found = TraceContext(context.trace_id, context.span_id, int(context.trace_flags), state)
    try:
        return parse(found.stored()).stored()
    except InvalidMessage:  # a vendor's tracestate beyond the header's rules: the ids still link
        return TraceContext(found.trace_id, found.span_id, found.flags).stored()


def _tracestate_problem(state: str) -> str | None:
    if not state:
        return None
    if len(state) > MAX_TRACESTATE:
        return f"tracestate must be at most {MAX_TRACESTATE} characters (got {len(state)})"
    members = [member.strip(" \t") for member in state.split(",")]
    for member in members:
        if member and TRACESTATE_MEMBER.fullmatch(member) is None:
            return "tracestate must be comma-separated key=value members (W3C trace context)"
    return None
