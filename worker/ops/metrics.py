"""Prometheus metrics of the outbox itself, served by `outbox metrics --port 9808`.

Two sources, so that any number of worker processes on any number of hosts add up:

- **Gauges are read from the database on every scrape** (the outbox row is the truth), as
  one consistent snapshot (`worker.ops.snapshot`): messages by status and by lane, the
  backlog's age counted from due times, leases, and the shared gate (paused, circuit,
  refused key, request spacing). A scrape costs what the backlog costs, not the history:
  see `worker.ops.queries`.
- **Counters and the API latency histogram are kept in Redis.** After each dispatch the
  worker adds its batch's figures to one hash with a single pipelined round trip
  (`record_batch`), and the endpoint reads that hash. Prefork processes, restarts and
  several worker containers need no coordination, and nothing is written to the outbox
  table for metrics. Redis is the broker's, so counters exist when the broker is Redis;
  with another broker (the demo's filesystem one) the endpoint serves the gauges alone.
  Flushing Redis resets the counters, which Prometheus's rate() treats as a restart.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import redis
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from models import Status
from worker.database import database_now
from worker.dispatch.gate import GateState, KeyState
from worker.errors import OperatorError
from worker.ops import api_target
from worker.ops.counters import (
    BATCH_STATES,
    COUNTERS_KEY,
    LATENCY_BUCKETS,
    MESSAGE_COUNTERS,
    POLICY_COUNTERS,
    SEGMENTS_PREFIX,
    bucket_field,
    counters_redis,
)
from worker.ops.snapshot import Snapshot, take_snapshot
from worker.ops.tenant_figures import OTHER, labelled, quota_figures, tenant_figures
from worker.reports.metrics import DeliveryCollector
from worker.settings import OperatorSettings

log = logging.getLogger(__name__)


class OutboxCollector(Collector):
    """Reads the database (and the counters in Redis) afresh on every scrape."""

    def __init__(
        self,
        engine: Engine,
        settings: OperatorSettings,
        counters: redis.Redis | None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.counters = counters
        # The outbox's time (the database's), which the gate's and the rows' times are in.
        self.clock = clock or (lambda: database_now(engine))

    def collect(self) -> Iterator[Metric]:
        yield from self._gauges()
        if self.counters is not None:
            yield from self._counters(self.counters)

    def _gauges(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("outbox_database_up", "1 when the last scrape read the database.")
        try:
            snapshot = take_snapshot(
                self.engine,
                now=self.clock(),
                circuit_failures=self.settings.circuit_failures,
                reasons=0,
            )
        except SQLAlchemyError as error:
            log.warning("metrics: cannot read the outbox database: %s", error)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _backlog(snapshot)
        yield from _gate(snapshot.gate)
        yield from _tenant_keys(snapshot.keys)
        yield from self._tenants(snapshot.taken_at)

    def _tenants(self, now: datetime) -> Iterator[Metric]:
        """Pending messages by tenant: the tenants OUTBOX_TENANT_WEIGHTS or the daily quotas
        name (and the default one, "") by name, the others as ``other``."""
        try:
            with self.engine.connect() as connection:
                lines = tenant_figures(connection, now, (Status.PENDING,))
        except SQLAlchemyError as error:
            log.warning("metrics: cannot read the tenants' figures: %s", error)
            return
        by_label = labelled(lines, set(self.settings.tenant_weights) | self.settings.quotas.tenants)
        pending = GaugeMetricFamily(
            "outbox_tenant_pending", "Pending messages by tenant.", labels=["tenant"]
        )
        due = GaugeMetricFamily(
            "outbox_tenant_due", "Pending messages due now by tenant.", labels=["tenant"]
        )
        oldest = GaugeMetricFamily(
            "outbox_tenant_oldest_due_seconds",
            "How long the tenant's oldest due message has waited (0: none due).",
            labels=["tenant"],
        )
        for label, figures in sorted(by_label.items()):
            pending.add_metric([label], figures.counts.get(Status.PENDING.value, 0))
            due.add_metric([label], figures.due)
            waited = None if figures.oldest_due_at is None else now - figures.oldest_due_at
            oldest.add_metric([label], _seconds(waited))
        yield from (pending, due, oldest)
        yield from self._quotas(now)

    def _quotas(self, now: datetime) -> Iterator[Metric]:
        """Each daily quota in force (its tenant named in settings: bounded labels), and what
        its tenant used of it today, in messages or SMS segments."""
        try:
            with self.engine.connect() as connection:
                lines = quota_figures(connection, self.settings.quotas, now)
        except SQLAlchemyError as error:
            log.warning("metrics: cannot read the daily quotas: %s", error)
            return
        labels = ["tenant", "unit"]
        used = GaugeMetricFamily(
            "outbox_tenant_quota_used",
            "What the tenant used today of its daily quota (OUTBOX_DAILY_QUOTAS, "
            "OUTBOX_DAILY_SEGMENT_QUOTAS), by unit: messages or segments.",
            labels=labels,
        )
        limit = GaugeMetricFamily(
            "outbox_tenant_quota_limit", "The tenant's daily quota, by unit.", labels=labels
        )
        for line in lines:
            used.add_metric([line.tenant, line.unit], line.used)
            limit.add_metric([line.tenant, line.unit], line.limit)
        yield from (used, limit)

    def _counters(self, client: redis.Redis) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "outbox_counters_up", "1 when the last scrape read the counters from Redis."
        )
        try:
            raw: dict[bytes, bytes] = client.hgetall(COUNTERS_KEY)  # type: ignore[assignment]
        except redis.RedisError as error:
            log.warning("metrics: cannot read the counters from Redis: %s", error)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        values = {key.decode(): float(value) for key, value in raw.items()}
        for name, documentation in MESSAGE_COUNTERS.items():
            counter = CounterMetricFamily(f"outbox_messages_{name}", documentation)
            counter.add_metric([], values.get(name, 0.0))
            yield counter
        yield from _policy_counters(values)
        batches = CounterMetricFamily(
            "outbox_batches", "Dispatches by what they did.", labels=["state"]
        )
        for state in BATCH_STATES:
            batches.add_metric([state], values.get(f"batches_{state}", 0.0))
        yield batches
        requests = CounterMetricFamily(
            "outbox_api_requests", "EnqueueCommunications requests made."
        )
        requests.add_metric([], values.get("requests", 0.0))
        yield requests
        yield HistogramMetricFamily(
            "outbox_api_request_duration_seconds",
            "EnqueueCommunications request latency, as the worker timed it.",
            buckets=[
                (f"{bound:g}", values.get(bucket_field(bound), 0.0)) for bound in LATENCY_BUCKETS
            ]
            + [("+Inf", values.get("requests", 0.0))],
            sum_value=values.get("latency_sum", 0.0),
        )


def _policy_counters(values: dict[str, float]) -> Iterator[Metric]:
    """What the sending policy held and refused, and the SMS segments sent by lane and encoding."""
    for name, documentation in POLICY_COUNTERS.items():
        counter = CounterMetricFamily(f"outbox_messages_{name}", documentation)
        counter.add_metric([], values.get(f"policy_{name}", 0.0))
        yield counter
    segments = CounterMetricFamily(
        "outbox_sms_segments",
        "SMS parts of the texts sent (SMSFromAlpha), by lane and encoding.",
        labels=["priority", "encoding"],
    )
    for key, value in sorted(values.items()):
        if key.startswith(SEGMENTS_PREFIX):
            lane, _, encoding = key.removeprefix(SEGMENTS_PREFIX).partition("/")
            segments.add_metric([lane, encoding], value)
    yield segments


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _by_lane(name: str, documentation: str, values: dict[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["priority"])
    for lane, value in values.items():
        family.add_metric([lane], value)
    return family


def _backlog(snapshot: Snapshot) -> Iterator[Metric]:
    """The messages: by status, by lane, and the backlog's age."""
    figures = snapshot.figures
    depth = GaugeMetricFamily(
        "outbox_messages",
        "Messages in the outbox by status (the planner's estimate where "
        "outbox_messages_estimated says so).",
        labels=["status"],
    )
    estimated = GaugeMetricFamily(
        "outbox_messages_estimated",
        "1 when outbox_messages of that status is the planner's estimate (a large history).",
        labels=["status"],
    )
    for status in Status:
        depth.add_metric([status.value], figures.by_status[status.value])
        estimated.add_metric([status.value], int(status.value in figures.estimated))
    yield depth
    yield estimated
    lanes = figures.lanes
    yield _by_lane(
        "outbox_pending_messages",
        "Pending messages, due or not, by priority.",
        {name: lane.pending for name, lane in lanes.items()},
    )
    yield _by_lane(
        "outbox_due_messages",
        "Messages a worker may claim now (due pending, or sending with an ended lease).",
        {name: lane.due for name, lane in lanes.items()},
    )
    yield _by_lane(
        "outbox_scheduled_messages",
        "Pending messages not due yet (scheduled, or backing off before a retry).",
        {name: lane.scheduled for name, lane in lanes.items()},
    )
    yield _by_lane(
        "outbox_oldest_pending_age_seconds",
        "How long the longest-waiting due message has waited since its due time "
        "(0 when none is due; scheduled messages do not count).",
        {name: _seconds(snapshot.due_age(lane)) for name, lane in lanes.items()},
    )
    yield _gauge(
        "outbox_retrying_messages",
        "Pending messages waiting to be retried after a worker's failed try.",
        figures.retrying,
    )
    yield _gauge(
        "outbox_leases_in_flight",
        "Sending messages under a running lease.",
        figures.leases_in_flight,
    )
    yield _gauge(
        "outbox_expired_leases",
        "Sending messages whose lease ended (a worker died or hung): due again.",
        figures.expired_leases,
    )


def _seconds(age: timedelta | None) -> float:
    return 0.0 if age is None else age.total_seconds()


def _gate(gate: GateState) -> Iterator[Metric]:
    """The shared sending state every worker obeys."""
    yield _gauge("outbox_sending_paused", "1 while every worker waits.", int(gate.paused))
    yield _gauge(
        "outbox_circuit_open",
        "1 while the circuit breaker is open (one probe at a time).",
        int(gate.circuit_open),
    )
    yield _gauge("outbox_circuit_failures", "Request-level failures in a row.", gate.failures)
    yield _gauge(
        "outbox_api_key_refused",
        "1 after the API refused the key (401/403): sending has stopped.",
        int(gate.refused_key),
    )
    yield _gauge(
        "outbox_request_spacing_seconds",
        "Spacing between requests kept after a 429 (0: none).",
        gate.spacing_seconds,
    )
    yield _gauge(
        "outbox_batch_size_limit",
        "The batch size allowed after a too-large answer (0: the configured size).",
        gate.batch_limit or 0,
    )


def _tenant_keys(keys: list[KeyState]) -> Iterator[Metric]:
    """Each tenant's own key's brakes, by tenant: the tenants the workers wrote on its row by
    name (each tenant of a shared key alike; the workers' WIRAYA_API_KEYS bound them), keys no
    tenant names now as ``other`` (the strictest of them). WIRAYA_API_KEY's are
    outbox_sending_paused and outbox_request_spacing_seconds."""
    paused: dict[str, int] = {}
    rates: dict[str, float | None] = {}
    for key in keys:
        for label in key.tenants or (OTHER,):
            paused[label] = max(paused.get(label, 0), int(key.paused))
            rate, before = key.rate_per_second, rates.get(label)
            rates[label] = min(rate, before) if rate and before else rate or before
    paused_family = GaugeMetricFamily(
        "outbox_tenant_key_paused",
        "1 while the tenant's own key waits out a 429 (its Retry-After).",
        labels=["tenant"],
    )
    rate_family = GaugeMetricFamily(
        "outbox_tenant_key_rate",
        "The request rate the tenant's own key learnt from its 429s, requests/s (0: none).",
        labels=["tenant"],
    )
    for label in sorted(paused):
        paused_family.add_metric([label], paused[label])
        rate_family.add_metric([label], rates[label] or 0.0)
    yield from (paused_family, rate_family)


def registry_for(engine: Engine, settings: OperatorSettings) -> CollectorRegistry:
    """A registry holding only the outbox's metrics (no process metrics of this server)."""
    registry = CollectorRegistry(auto_describe=False)
    counters = counters_redis(settings.broker_url)
    registry.register(OutboxCollector(engine, settings, counters))
    registry.register(DeliveryCollector(engine, counters))
    return registry


def serve(engine: Engine, settings: OperatorSettings, *, host: str, port: int) -> int:
    """Serve /metrics until SIGTERM or Ctrl-C; returns the exit code."""
    registry = registry_for(engine, settings)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        raise OperatorError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    counters = "from Redis" if counters_redis(settings.broker_url) else "off (broker is not Redis)"
    url = f"http://{host}:{server.server_port}/metrics"
    print(f"serving outbox metrics on {url} (counters {counters})", flush=True)
    print(api_target.describe_environ(), flush=True)  # the line every outbox process logs
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    print("metrics server stopped", file=sys.stderr)
    return 0


__all__ = ["OutboxCollector", "registry_for", "serve"]
