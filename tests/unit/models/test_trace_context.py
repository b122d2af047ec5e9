"""The trace context a message stores: the active span's, or one given; checked like every field."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from models import InvalidMessage, NewMessage
from models.trace_context import parse
from tests.spans import recorded_spans

ALPHA = {"$type": "SMSFromAlpha", "sender": "Wiraya", "text": "hello"}
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def create(**options: object) -> NewMessage:
    return NewMessage.create(recipient="46701234567", content=ALPHA, **options)


def test_the_active_span_is_stored_with_its_tracestate() -> None:
    with recorded_spans() as spans, spans.tracer.start_as_current_span("checkout") as span:
        message = create()
    context = span.get_span_context()
    stored = parse(message.trace_context)
    assert (stored.trace_id, stored.span_id, stored.sampled) == (
        context.trace_id,
        context.span_id,
        True,
    )
    assert message.row()["trace_context"] == message.trace_context


def test_without_an_active_span_the_column_is_left_out() -> None:
    with recorded_spans():
        message = create()
    assert message.trace_context is None
    assert "trace_context" not in message.row()


def test_a_given_context_is_kept_with_its_tracestate() -> None:
    given = f"{PARENT} congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"
    assert create(trace_context=given).trace_context == given
    assert parse(given).tracestate == "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        (42, "must be text, got int"),
        ("00-abc", "must start with a W3C traceparent"),
        (PARENT.replace("4bf92f3577b34da6a3ce929d0e0e4736", "0" * 32), "traceparent"),
        (PARENT.upper(), "traceparent"),
        (f"{PARENT} {'k=v,' * 200}", "tracestate must be at most 512 characters"),
        (f"{PARENT} not a member", "tracestate must be comma-separated key=value"),
    ],
)
def test_a_bad_context_is_refused_naming_the_field(given: object, reason: str) -> None:
    with pytest.raises(InvalidMessage) as refused:
        create(trace_context=given)
    assert refused.value.field == "trace_context"
    assert reason in refused.value.reason


def test_a_producer_without_opentelemetry_loads_none_of_it() -> None:
    script = (
        "import sys, json\n"
        "from models import NewMessage\n"
        "m = NewMessage.create(recipient='46701234567', "
        "content={'$type': 'SMSFromAlpha', 'sender': 'Wiraya', 'text': 'hi'})\n"
        "print(json.dumps([m.trace_context, [n for n in sys.modules if 'opentelemetry' in n]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=os.environ
    )
    assert json.loads(done.stdout) == [None, []]
