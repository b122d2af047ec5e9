"""`outbox metrics`: gauges that match the table, counters and latency kept in Redis by workers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import generate_latest
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from models import OutboxMessage, SMSProject, enqueue, outbox_tenant_quotas
from tests.integration.ops.endpoint import samples, scrape_endpoint
from worker.database import make_engine
from worker.dispatch.summary import BatchSummary
from worker.ops import counters, metrics
from worker.ops.access import operator_settings


def _now() -> datetime:
    return datetime.now(UTC)


def test_the_endpoint_serves_figures_that_match_the_table(
    filled: Engine, counters_url: str
) -> None:
    url = filled.url.render_as_string(hide_password=False)
    exposition = scrape_endpoint(url, counters_url)
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
    assert got[("outbox_messages_estimated", (("status", "accepted"),))] == 0
    lanes = {
        name: {
            priority: got[(f"outbox_{name}", (("priority", priority),))]
            for priority in ("urgent", "normal", "bulk")
        }
        for name in ("pending_messages", "due_messages", "scheduled_messages")
    }
    assert lanes == {
        "pending_messages": {"urgent": 0, "normal": 2, "bulk": 1},
        "due_messages": {"urgent": 0, "normal": 2, "bulk": 0},  # m1 and m2, not m3
        "scheduled_messages": {"urgent": 0, "normal": 0, "bulk": 1},
    }
    age = "outbox_oldest_pending_age_seconds"
    assert 590 < got[(age, (("priority", "normal"),))] < 900  # m1, due for 10 minutes
    assert got[(age, (("priority", "bulk"),))] == 0  # m3 is scheduled: it has not waited
    assert got[(age, (("priority", "urgent"),))] == 0
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


def test_the_sending_policy_counters_add_up_by_rule_lane_and_encoding(
    sqlite_url: str, counters_url: str
) -> None:
    held = BatchSummary(state="sent")
    held.policy.update({"held": 2, "paced": 1, "suppressed": 1})
    held.segments.update({"bulk/gsm7": 3, "normal/ucs2": 2})
    counters.record_batch(held, counters_url)
    again = BatchSummary(state="sent")
    again.policy.update({"duplicate": 1, "held": 1})
    again.segments.update({"bulk/gsm7": 1})
    counters.record_batch(again, counters_url)
    settings = operator_settings(
        {"OUTBOX_DATABASE_URL": sqlite_url, "CELERY_BROKER_URL": counters_url}
    )
    engine = make_engine(sqlite_url)
    got = samples(generate_latest(metrics.registry_for(engine, settings)).decode())
    engine.dispose()
    assert got[("outbox_messages_held_total", ())] == 3
    assert got[("outbox_messages_paced_total", ())] == 1
    assert got[("outbox_messages_suppressed_total", ())] == 1
    assert got[("outbox_messages_duplicate_total", ())] == 1
    segments = "outbox_sms_segments_total"
    assert got[(segments, (("encoding", "gsm7"), ("priority", "bulk")))] == 4
    assert got[(segments, (("encoding", "ucs2"), ("priority", "normal")))] == 2


def test_pending_messages_by_tenant_with_bounded_labels(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with Session(engine) as session, session.begin():
        for number, tenant in enumerate(["clinic", "clinic", "shop", "town", ""]):
            enqueue(
                session,
                recipient=f"4670123456{number}",
                content=SMSProject(project_id=1, placeholders=[]),
                tenant=tenant,
            )
    settings = operator_settings(
        {
            "OUTBOX_DATABASE_URL": sqlite_url,
            "CELERY_BROKER_URL": "filesystem://",
            "OUTBOX_TENANT_WEIGHTS": "clinic=1",
        }
    )
    got = samples(generate_latest(metrics.registry_for(engine, settings)).decode())
    engine.dispose()
    pending = {
        dict(labels)["tenant"]: value
        for (name, labels), value in got.items()
        if name == "outbox_tenant_pending"
    }
    assert pending == {"clinic": 2, "other": 2, "": 1}  # shop and town are not named
    assert got[("outbox_tenant_due", (("tenant", "clinic"),))] == 2


def test_daily_quotas_used_and_limits_by_tenant_and_unit(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    today = _now().date()
    with engine.begin() as connection:
        connection.execute(
            insert(outbox_tenant_quotas),
            [
                {"day": today, "tenant": "clinic", "messages": 8_100, "segments": 9_000},
                {"day": today - timedelta(days=1), "tenant": "shop", "messages": 70, "segments": 0},
                {
                    "day": today,
                    "tenant": "town",
                    "messages": 5,
                    "segments": 0,
                },  # no quota: no label
            ],
        )
    settings = operator_settings(
        {
            "OUTBOX_DATABASE_URL": sqlite_url,
            "CELERY_BROKER_URL": "filesystem://",
            "OUTBOX_DAILY_QUOTAS": "clinic=10000,shop=50",
            "OUTBOX_DAILY_SEGMENT_QUOTAS": "clinic=12000",
        }
    )
    got = samples(generate_latest(metrics.registry_for(engine, settings)).decode())
    engine.dispose()
    quotas = {
        (
            name.removeprefix("outbox_tenant_quota_"),
            dict(labels)["tenant"],
            dict(labels)["unit"],
        ): value
        for (name, labels), value in got.items()
        if name.startswith("outbox_tenant_quota_")
    }
    assert quotas == {
        ("used", "clinic", "messages"): 8_100,
        ("limit", "clinic", "messages"): 10_000,
        ("used", "shop", "messages"): 0,  # yesterday's count is not today's
        ("limit", "shop", "messages"): 50,
        ("used", "clinic", "segments"): 9_000,
        ("limit", "clinic", "segments"): 12_000,
    }
