"""`outbox metrics`: gauges that match the table, counters and latency kept in Redis by workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from models import OutboxMessage, SMSProject, enqueue_many
from worker.database import make_engine
from worker.dispatch import gate as gates
from worker.dispatch.gate import transitions
from worker.dispatch.summary import BatchSummary
from worker.ops import counters, metrics
from worker.ops.access import operator_settings
from worker.ops.processes import free_port

OUTBOX = str(Path(sys.executable).with_name("outbox"))


def _now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def counters_url(redis_url: str) -> Iterator[str]:
    """A Redis database of its own for the counters hash, emptied before and after."""
    url = redis_url.rsplit("/", 1)[0] + "/14"
    client = redis.Redis.from_url(url)
    client.delete(counters.COUNTERS_KEY)
    yield url
    client.delete(counters.COUNTERS_KEY)
    client.close()


@pytest.fixture
def filled(database_url: str) -> Iterator[Engine]:
    """3 pending (1 retrying, 1 not due), 1 sending under lease, 2 accepted, 1 failed."""
    engine = make_engine(database_url)
    with Session(engine) as session, session.begin():
        enqueue_many(
            session,
            [
                dict(
                    client_message_id=f"m{n}",
                    recipient="46701234567",
                    content=SMSProject(project_id=1),
                )
                for n in range(1, 8)
            ],
        )
    changes: dict[str, dict[str, Any]] = {
        "m1": {"created_at": _now() - timedelta(minutes=10)},
        "m2": {"last_error": "transient", "attempts": 1},
        "m3": {"next_attempt_at": _now() + timedelta(hours=1)},
        "m4": {"status": "sending", "attempts": 1, "locked_until": _now() + timedelta(minutes=2)},
        "m5": {"status": "accepted", "attempts": 1, "tracking_id": "a" * 32, "accepted_at": _now()},
        "m6": {"status": "accepted", "attempts": 1, "tracking_id": "b" * 32, "accepted_at": _now()},
        "m7": {"status": "failed", "attempts": 1, "last_error": "rejected"},
    }
    with engine.begin() as connection:
        for client_message_id, values in changes.items():
            connection.execute(
                update(OutboxMessage)
                .where(OutboxMessage.client_message_id == client_message_id)
                .values(**values)
            )
        gates.read_gate(connection)
        transitions.count_failure_unless_answered_since(
            connection,
            started=_now(),
            now=_now(),
            reason="ServerError",
            pause_until=_now() + timedelta(minutes=5),
            threshold=5,
            probe_at=_now() + timedelta(minutes=5),
            was_probe=False,
        )
    yield engine
    engine.dispose()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_endpoint_serves_figures_that_match_the_table(
    filled: Engine, counters_url: str
) -> None:
    url = filled.url.render_as_string(hide_password=False)
    port = free_port()
    environment = dict(os.environ, CELERY_BROKER_URL=counters_url)
    server = subprocess.Popen(
        [OUTBOX, "--database-url", url, "metrics", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )
    try:
        assert server.stdout is not None
        assert "serving outbox metrics" in server.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            exposition = answer.read().decode()
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=10)
    assert server.returncode == 0
    got = samples(exposition)
    with filled.begin() as connection:
        table = dict(
            connection.execute(
                select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
            ).all()
        )
    for status in ("pending", "sending", "accepted", "failed", "cancelled"):
        assert got[("outbox_messages", (("status", status),))] == table.get(status, 0)
    assert got[("outbox_database_up", ())] == 1
    assert 590 < got[("outbox_oldest_pending_age_seconds", ())] < 900
    assert got[("outbox_due_messages", ())] == 2  # m1 and m2; m3 is scheduled later
    assert got[("outbox_retrying_messages", ())] == 1
    assert got[("outbox_leases_in_flight", ())] == 1
    assert got[("outbox_expired_leases", ())] == 0
    assert got[("outbox_sending_paused", ())] == 1
    assert got[("outbox_circuit_failures", ())] == 1
    assert got[("outbox_circuit_open", ())] == 0
    assert got[("outbox_api_key_refused", ())] == 0
    assert got[("outbox_counters_up", ())] == 1
    assert got[("outbox_messages_accepted_total", ())] == 0


def test_counters_and_latency_add_up_across_batches(sqlite_url: str, counters_url: str) -> None:
    counters.record_batch(
        BatchSummary(state="sent", accepted=98, retried=1, failed=1, request_seconds=[0.04]),
        counters_url,
    )
    counters.record_batch(
        BatchSummary(state="alarm", released=100, request_seconds=[0.3, 12.0]), counters_url
    )
    counters.record_batch(BatchSummary(state="idle"), counters_url)
    settings = operator_settings(
        {"OUTBOX_DATABASE_URL": sqlite_url, "CELERY_BROKER_URL": counters_url}
    )
    engine = make_engine(sqlite_url)
    got = samples(generate_latest(metrics.registry_for(engine, settings)).decode())
    engine.dispose()
    assert got[("outbox_messages_accepted_total", ())] == 98
    assert got[("outbox_messages_retried_total", ())] == 1
    assert got[("outbox_messages_failed_total", ())] == 1
    assert got[("outbox_messages_released_total", ())] == 100
    assert got[("outbox_api_requests_total", ())] == 3
    assert got[("outbox_batches_total", (("state", "alarm"),))] == 1
    assert got[("outbox_batches_total", (("state", "idle"),))] == 1
    latency = "outbox_api_request_duration_seconds"
    assert got[(f"{latency}_bucket", (("le", "0.05"),))] == 1
    assert got[(f"{latency}_bucket", (("le", "0.5"),))] == 2
    assert got[(f"{latency}_bucket", (("le", "+Inf"),))] == 3
    assert got[(f"{latency}_count", ())] == 3
    assert got[(f"{latency}_sum", ())] == pytest.approx(12.34)


def test_without_a_redis_broker_only_the_gauges_are_served(sqlite_url: str) -> None:
    settings = operator_settings(
        {"OUTBOX_DATABASE_URL": sqlite_url, "CELERY_BROKER_URL": "filesystem://"}
    )
    engine = make_engine(sqlite_url)
    counters.record_batch(BatchSummary(state="sent", accepted=1), "filesystem://")  # a no-op
    names = {
        name
        for name, _ in samples(generate_latest(metrics.registry_for(engine, settings)).decode())
    }
    engine.dispose()
    assert "outbox_messages" in names
    assert not any(name.endswith("_total") for name in names)


def test_a_database_that_goes_away_reads_as_down_not_as_an_error() -> None:
    settings = operator_settings({"CELERY_BROKER_URL": "filesystem://"})
    engine = make_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/test", connect_args={"connect_timeout": 2}
    )
    got = samples(generate_latest(metrics.registry_for(engine, settings)).decode())
    engine.dispose()
    assert got[("outbox_database_up", ())] == 0


def test_a_redis_that_is_down_never_fails_a_dispatch() -> None:
    counters.record_batch(BatchSummary(state="sent", accepted=1), "redis://127.0.0.1:1/0")
