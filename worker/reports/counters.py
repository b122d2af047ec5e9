"""The receiver's counters, kept in one Redis hash (the broker's Redis) beside the workers' own.

After each request the receiver adds what it did with one pipelined round trip; `outbox
metrics` reads the hash (`worker.reports.metrics`). Several receiver processes add up, and a
Redis failure is logged and never fails a request: the reports are committed by then. The
receiver hands its figures to a `CounterQueue`: one thread of its own sends them, so no answer
waits for Redis and the event loop never blocks on it; when Redis is slower than the requests,
figures past the queue's capacity are dropped (and the drops logged).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

import redis

from models import DeliveryStatus
from worker.reports.storage import Stored

log = logging.getLogger(__name__)

# The hash keeps the name it was created under, so counters survive an upgrade.
COUNTERS_KEY = "outbox:receipts"
# Accepted to DELIVERED: an SMS within seconds, a call or a phone switched off much later.
DELIVERY_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)
KNOWN_STATUSES = tuple(status.value for status in DeliveryStatus)
OTHER = "other"  # statuses Wiraya may add: counted together, to keep the label set small
QUEUED = 1_000  # figures of requests waiting for Redis, at most


def status_label(status: str) -> str:
    return status if status in KNOWN_STATUSES else OTHER


def bucket_field(bound: float) -> str:
    return f"delivered_le_{bound:g}"


def record_request(
    client: redis.Redis | None, *, code: int, stored: Stored | None = None, rejected: int = 0
) -> None:
    """Add one request's figures to the shared counters; never raises."""
    if client is None:
        return
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hincrby(COUNTERS_KEY, f"requests_{code}", 1)
        if rejected:
            pipe.hincrby(COUNTERS_KEY, "rejected", rejected)
        if stored is not None:
            _add_stored(pipe, stored)
        pipe.execute()
    except redis.RedisError as error:
        log.warning("could not record receiver metrics in Redis: %s", error)


def _add_stored(pipe: redis.client.Pipeline, stored: Stored) -> None:
    labels: dict[str, int] = {}
    for status, count in stored.stored.items():
        label = status_label(status)
        labels[label] = labels.get(label, 0) + count
    for label, count in labels.items():
        pipe.hincrby(COUNTERS_KEY, f"reports_{label}", count)
    for name in ("duplicates", "unmatched"):
        if value := getattr(stored, name):
            pipe.hincrby(COUNTERS_KEY, name, value)
    for seconds in stored.delivered_seconds:
        pipe.hincrby(COUNTERS_KEY, "delivered", 1)
        pipe.hincrbyfloat(COUNTERS_KEY, "delivered_sum", seconds)
        for bound in DELIVERY_BUCKETS:  # cumulative, as Prometheus buckets are
            if seconds <= bound:
                pipe.hincrby(COUNTERS_KEY, bucket_field(bound), 1)


@dataclass(frozen=True, slots=True)
class Figures:
    """What one request did, waiting to be added to the counters."""

    code: int
    stored: Stored | None = None
    rejected: int = 0


class CounterQueue:
    """Adds requests' figures to the counters from a thread of its own; never blocks."""

    def __init__(self, client: redis.Redis | None, capacity: int = QUEUED) -> None:
        self.client = client
        self.pending: queue.Queue[Figures] = queue.Queue(capacity)
        self.dropped = 0
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def record(self, figures: Figures) -> None:
        """Queue one request's figures; dropped (and counted) when the queue is full."""
        if self.client is None:
            return
        self._started()
        try:
            self.pending.put_nowait(figures)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % QUEUED == 0:
                log.warning(
                    "Redis is slow: %d requests' figures left out of the counters", self.dropped
                )

    def _started(self) -> None:
        with self._start:
            if self._thread is None:
                self._thread = threading.Thread(target=self._send, name="counters", daemon=True)
                self._thread.start()

    def _send(self) -> None:
        while True:
            figures = self.pending.get()
            record_request(
                self.client, code=figures.code, stored=figures.stored, rejected=figures.rejected
            )
