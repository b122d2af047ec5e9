"""When the worker traces: the standard OTEL_* variables decide, and nothing is loaded otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from worker.tracing import configured


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "outbox"}, False),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_the_otel_variables_turn_tracing_on(environ: dict[str, str], on: bool) -> None:
    assert configured(environ) is on


def decided(**environ: str) -> tuple[bool, list[str], str]:
    """In a fresh interpreter: whether a tracer was made, which trace SDK modules got loaded,
    and what was logged."""
    script = (
        "import json, logging, sys\n"
        "logging.basicConfig(level=logging.ERROR, stream=sys.stderr)\n"
        "from worker import tracing\n"
        "made = tracing.tracer() is not None\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', "
        "'opentelemetry.exporter', 'worker.tracing_setup')))\n"
        "print(json.dumps([made, loaded]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**env, **environ},
        capture_output=True,
        text=True,
        check=True,
    )
    made, loaded = json.loads(done.stdout.splitlines()[-1])
    return made, loaded, done.stderr


def test_off_makes_no_tracer_and_loads_no_sdk() -> None:
    assert decided() == (False, [], "")


def test_on_sets_the_sdk_up_in_the_process_that_asks() -> None:
    made, loaded, _ = decided(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9")
    assert made
    assert "worker.tracing_setup" in loaded and "opentelemetry.sdk.trace" in loaded


def test_an_unknown_exporter_is_one_line_and_no_tracer() -> None:
    made, _, logged = decided(OTEL_TRACES_EXPORTER="jaeger")
    assert not made
    assert "tracing stays off: OTEL_TRACES_EXPORTER: 'jaeger' is not one of otlp, console" in logged


def test_a_grpc_protocol_is_refused_by_name() -> None:
    made, _, logged = decided(OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
    assert not made
    assert "OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf is built in, not 'grpc'" in logged
