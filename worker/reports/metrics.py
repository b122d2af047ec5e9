"""Prometheus metrics of delivery, collected by `outbox metrics` beside the outbox's own.

Gauges are read from the database on every scrape: accepted messages by delivery status,
and reports no message holds yet. Counters and the accepted-to-delivered latency come from
the Redis hash the receiver adds to after each request (`worker.reports.counters`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from worker.reports import counters
from worker.reports.figures import UNMATCHED_COUNTED, delivery_figures

log = logging.getLogger(__name__)
ANSWER_CODES = (200, 400, 401, 413, 503)


class DeliveryCollector(Collector):
    """Reads delivery figures afresh on every scrape."""

    def __init__(self, engine: Engine, counters_client: redis.Redis | None) -> None:
        self.engine = engine
        self.counters = counters_client

    def collect(self) -> Iterator[Metric]:
        yield from self._gauges()
        if self.counters is not None:
            yield from self._counters(self.counters)

    def _gauges(self) -> Iterator[Metric]:
        try:
            figures = delivery_figures(self.engine)
        except SQLAlchemyError as error:  # outbox_database_up says so already
            log.warning("metrics: cannot read delivery figures: %s", error)
            return
        by_status = GaugeMetricFamily(
            "outbox_delivery_status_messages",
            "Accepted messages by their latest delivery report's status (none: no report yet).",
            labels=["delivery_status"],
        )
        other = 0
        for status, count in figures.by_status.items():
            if status in counters.KNOWN_STATUSES:
                by_status.add_metric([status], count)
            else:
                other += count
        by_status.add_metric([counters.OTHER], other)
        by_status.add_metric(["none"], figures.awaiting)
        yield by_status
        yield GaugeMetricFamily(
            "outbox_delivery_reports_unmatched",
            "Stored reports whose tracking id no message holds (yet), "
            f"counted up to {UNMATCHED_COUNTED:,}.",
            value=figures.unmatched_reports,
        )

    def _counters(self, client: redis.Redis) -> Iterator[Metric]:
        try:
            raw: dict[bytes, bytes] = client.hgetall(counters.COUNTERS_KEY)  # type: ignore[assignment]
        except redis.RedisError as error:  # outbox_counters_up says so already
            log.warning("metrics: cannot read the receiver's counters: %s", error)
            return
        values = {key.decode(): float(value) for key, value in raw.items()}
        received = CounterMetricFamily(
            "outbox_delivery_reports_received",
            "New delivery reports stored, by status.",
            labels=["status"],
        )
        for status in (*counters.KNOWN_STATUSES, counters.OTHER):
            received.add_metric([status], values.get(f"reports_{status}", 0.0))
        yield received
        for name, documentation in (
            ("duplicates", "Reports received again: stored once, changed nothing."),
            ("unmatched", "New reports whose tracking id no message held when they arrived."),
            ("rejected", "Malformed reports refused (the rest of their request was stored)."),
        ):
            counter = CounterMetricFamily(f"outbox_delivery_reports_{name}", documentation)
            counter.add_metric([], values.get(name, 0.0))
            yield counter
        requests = CounterMetricFamily(
            "outbox_delivery_requests", "Requests to the receiver by answer.", labels=["code"]
        )
        for code in ANSWER_CODES:
            requests.add_metric([str(code)], values.get(f"requests_{code}", 0.0))
        yield requests
        yield HistogramMetricFamily(
            "outbox_delivery_latency_seconds",
            "Accepted to DELIVERED (the report's doneAt), for reports the receiver matched.",
            buckets=[
                (f"{bound:g}", values.get(counters.bucket_field(bound), 0.0))
                for bound in counters.DELIVERY_BUCKETS
            ]
            + [("+Inf", values.get("delivered", 0.0))],
            sum_value=values.get("delivered_sum", 0.0),
        )
