"""What the worker's processes load: only what dispatching needs (a pool process is a fork).

A fresh interpreter imports what `outbox-celery -A worker worker` and `beat` import before the
pool forks: the launcher, the app, its tasks and beat's scheduler. None of Flower (and the
Tornado server under it), the sandbox, the receiver's web stack, prometheus_client's HTTP
server, the operator's command line or Celery's interactive shells may be among them; nor, with
tracing off, OpenTelemetry's trace SDK and exporters (redis-py itself loads OpenTelemetry's API
and metrics SDK when they are installed: that is redis's, and the test says so).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

NOT_FOR_DISPATCHING = (
    "flower",
    "tornado",
    "sandbox",
    "starlette",
    "uvicorn",
    "prometheus_client.exposition",
    "worker.ops.cli",
    "worker.reports",
    "click_repl",
    "prompt_toolkit",
    "worker.tracing_setup",
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter",
    "google.protobuf",
)


def loaded_after(code: str) -> set[str]:
    """The names in sys.modules of a fresh interpreter after running ``code``."""
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("OTEL_")},
        "OUTBOX_DATABASE_URL": "postgresql+psycopg://h/db",
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
        "WIRAYA_BASE_URL": "http://localhost:8080",
    }
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def unwanted(modules: set[str]) -> list[str]:
    return [
        name
        for name in NOT_FOR_DISPATCHING
        if any(module == name or module.startswith(name + ".") for module in modules)
    ]


def test_the_worker_and_beat_load_nothing_dispatching_does_not_need() -> None:
    code = (
        "from worker.runtime.launch import outbox_celery\n"
        "from celery.app.utils import find_app\n"
        "find_app('worker')\n"
        "import worker.runtime.tasks, worker.runtime.beat"
    )
    modules = loaded_after(code)
    assert "worker.runtime.tasks" in modules and "celery.bin.worker" in modules
    assert unwanted(modules) == []


@pytest.mark.parametrize("module", ["worker.runtime.tasks", "worker.runtime.celery_app"])
def test_importing_the_app_loads_nothing_dispatching_does_not_need(module: str) -> None:
    assert unwanted(loaded_after(f"import {module}")) == []


def test_without_opentelemetry_installed_the_worker_loads_none_of_it() -> None:
    # As if the tracing extra were not installed: every import of it fails.
    modules = loaded_after(
        "import sys\nsys.modules['opentelemetry'] = None\n"
        "import worker.runtime.tasks, worker.runtime.beat, worker.dispatch.dispatcher"
    )
    assert "worker.tracing" in modules
    assert [name for name in modules if name.startswith("opentelemetry")] == ["opentelemetry"]


def test_redis_is_what_loads_opentelemetry_when_it_is_installed() -> None:
    # The footprint with the tracing extra installed and tracing off: redis-py's own metrics.
    assert "opentelemetry.sdk.metrics" in loaded_after("import redis")
    assert "opentelemetry.sdk.trace" not in loaded_after("import redis")


def test_the_check_sees_flower_where_the_celery_command_loads_it() -> None:
    # `celery` itself imports its plugins, Flower among them: the check above would see it.
    assert "flower" in unwanted(loaded_after("import celery.bin.celery"))


def test_outbox_celery_has_the_worker_and_beat_commands_only() -> None:
    from worker.runtime.launch import outbox_celery

    assert sorted(outbox_celery.commands) == ["beat", "worker"]
