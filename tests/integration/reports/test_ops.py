"""Delivery for operators: `outbox stats`, `outbox inspect` and the metrics, on both databases."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from tests.integration.reports.harness import RECEIVED_LATER, accept, report
from worker.database import make_engine
from worker.ops import metrics
from worker.ops.access import operator_settings
from worker.ops.cli import main
from worker.reports import counters
from worker.reports.storage import store_reports


@pytest.fixture
def delivered(engine: Engine) -> Engine:
    """Four accepted messages: m1 DELIVERED, m2 NOT_DELIVERED, m3 NEXTATTEMPT, m4 no report;
    and one report nobody holds."""
    accept(engine, 4)
    store_reports(
        engine,
        [
            report(1, "NEXTATTEMPT", 1),
            report(1, "DELIVERED", 5),
            report(2, "NOT_DELIVERED", 6),
            report(3, "NEXTATTEMPT", 2),
            report(99, "DELIVERED", 3),
        ],
        received_at=RECEIVED_LATER,
    )
    return engine


def run(engine: Engine, *argv: str, capsys: pytest.CaptureFixture[str]) -> str:
    url = engine.url.render_as_string(hide_password=False)
    assert main(["--database-url", url, *argv]) == 0
    return capsys.readouterr().out


def test_stats_shows_delivery_counts(delivered: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    figures = json.loads(run(delivered, "stats", "--json", capsys=capsys))["delivery"]
    assert figures["by_status"]["DELIVERED"] == 1
    assert figures["by_status"]["NOT_DELIVERED"] == 1
    assert figures["by_status"]["NEXTATTEMPT"] == 1
    assert figures["by_status"]["OPTOUT"] == 0
    assert figures["awaiting_report"] == 1
    assert figures["unmatched_reports"] == 1
    out = run(delivered, "stats", capsys=capsys)
    assert "delivery (accepted messages by their latest report)" in out
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines()[-6:] if line.strip()}
    assert lines["DELIVERED"] == lines["NOT_DELIVERED"] == lines["NEXTATTEMPT"] == "1"
    assert lines["unmatched"] == "1"
    assert "OPTOUT" not in lines  # zero counts are left out of the table


def test_inspect_shows_a_messages_reports(
    delivered: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = json.loads(run(delivered, "inspect", "m1", "--json", capsys=capsys))
    assert shown["delivery_status"] == "DELIVERED"
    assert [r["status"] for r in shown["delivery_reports"]] == ["NEXTATTEMPT", "DELIVERED"]
    out = run(delivered, "inspect", "m1", capsys=capsys)
    assert "delivery reports (2)" in out
    assert any(line.split() == ["delivery_status", "DELIVERED"] for line in out.splitlines())
    out = run(delivered, "inspect", "m4", capsys=capsys)
    assert "delivery reports (0)" in out


@pytest.fixture
def counters_url(redis_url: str) -> Iterator[str]:
    url = redis_url.rsplit("/", 1)[0] + "/13"
    client = redis.Redis.from_url(url)
    client.delete(counters.COUNTERS_KEY)
    yield url
    client.delete(counters.COUNTERS_KEY)
    client.close()


def samples(
    engine: Engine, broker_url: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = engine.url.render_as_string(hide_password=False)
    settings = operator_settings({"OUTBOX_DATABASE_URL": url, "CELERY_BROKER_URL": broker_url})
    text = generate_latest(metrics.registry_for(engine, settings)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_reports_and_time_deliveries(delivered: Engine, counters_url: str) -> None:
    client = redis.Redis.from_url(counters_url)
    stored = store_reports(
        delivered,
        [report(4, "DELIVERED", 40), report(4, "DELIVERED", 40)],
        received_at=RECEIVED_LATER,
    )
    counters.record_request(client, code=200, stored=stored, rejected=3)
    counters.record_request(client, code=401)
    stored = store_reports(delivered, [report(5, "EXPIRED", 1)], received_at=RECEIVED_LATER)
    counters.record_request(client, code=200, stored=stored)
    client.close()
    got = samples(delivered, counters_url)
    assert got[("outbox_delivery_status_messages", (("delivery_status", "DELIVERED"),))] == 2
    assert got[("outbox_delivery_status_messages", (("delivery_status", "none"),))] == 0
    assert got[("outbox_delivery_reports_unmatched", ())] == 2
    assert got[("outbox_delivery_reports_received_total", (("status", "DELIVERED"),))] == 1
    assert got[("outbox_delivery_reports_received_total", (("status", "other"),))] == 1
    assert got[("outbox_delivery_reports_duplicates_total", ())] == 1
    assert got[("outbox_delivery_reports_rejected_total", ())] == 3
    assert got[("outbox_delivery_reports_unmatched_total", ())] == 1
    assert got[("outbox_delivery_requests_total", (("code", "401"),))] == 1
    assert got[("outbox_delivery_requests_total", (("code", "200"),))] == 2
    latency = "outbox_delivery_latency_seconds"
    assert got[(f"{latency}_count", ())] == 1
    assert got[(f"{latency}_sum", ())] == pytest.approx(40.0)  # accepted at T0, done at T0+40 s
    assert got[(f"{latency}_bucket", (("le", "30"),))] == 0
    assert got[(f"{latency}_bucket", (("le", "60"),))] == 1


def test_without_redis_only_the_delivery_gauges_are_served(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    got = samples(engine, "filesystem://")
    engine.dispose()
    assert got[("outbox_delivery_reports_unmatched", ())] == 0
    assert not any(
        name.startswith("outbox_delivery") and name.endswith("_total") for name, _ in got
    )
