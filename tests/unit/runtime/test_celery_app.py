"""The Celery app's defaults that depend on the settings: pool size and time limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# The app reads its settings from the environment at import: ask a fresh interpreter.
SHOW_CONFIG = (
    "import json; from worker.runtime.celery_app import app; "
    "print(json.dumps([app.conf.worker_concurrency, app.conf.task_time_limit]))"
)


def app_config(**environ: str) -> list[int]:
    env = {**os.environ, "WIRAYA_BASE_URL": "http://localhost:8080", **environ}
    done = subprocess.run(
        [sys.executable, "-c", SHOW_CONFIG], env=env, capture_output=True, text=True, check=True
    )
    return list(json.loads(done.stdout))


@pytest.mark.parametrize(
    ("environ", "pool"),
    [
        ({"OUTBOX_DATABASE_URL": "postgresql+psycopg://h/db"}, 4),
        (
            {
                "OUTBOX_DATABASE_URL": "postgresql+psycopg://h/db",
                "OUTBOX_MAX_PARALLEL_DISPATCHES": "6",
            },
            6,
        ),
        ({"OUTBOX_DATABASE_URL": "sqlite:///outbox.db", "OUTBOX_MAX_PARALLEL_DISPATCHES": "6"}, 1),
    ],
)
def test_the_pool_has_a_process_per_parallel_dispatch_and_one_on_sqlite(
    environ: dict[str, str], pool: int
) -> None:
    assert app_config(**environ)[0] == pool


def test_the_time_limit_covers_the_lease_and_the_dispatch_budget() -> None:
    assert app_config(OUTBOX_LEASE_SECONDS="60")[1] == 62
