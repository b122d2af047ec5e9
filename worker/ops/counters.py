"""The shared counters of every worker process, kept in one Redis hash (the broker's Redis).

After each dispatch the worker adds its batch's figures with a single pipelined round trip
(`record_batch`); `outbox metrics` reads the hash (`worker.ops.metrics`). Prefork processes,
restarts and several worker hosts need no coordination, and nothing is written to the outbox
table for metrics. With another broker than Redis there are no counters. Flushing Redis resets
them, which Prometheus's rate() treats as a restart.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from worker.dispatch.summary import BatchSummary

log = logging.getLogger(__name__)

COUNTERS_KEY = "outbox:metrics"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
MESSAGE_COUNTERS = {
    "accepted": "Messages the API accepted (tracking id stored).",
    "failed": "Messages failed for good: rejected, invalid, expired or out of attempts.",
    "retried": "Per-message transient answers that scheduled a retry (an attempt spent).",
    "released": "Messages put back unsent after a request-level failure (no attempt spent).",
}
# The sending policy's (docs/sending-policy.md): what it held back or refused.
POLICY_COUNTERS = {
    "held": "Messages held by quiet hours (pending until the window ends, or expired in it).",
    "paced": "Messages held by per-recipient pacing (no attempt spent).",
    "suppressed": "Messages failed unsent: their recipient is on the opt-out list.",
    "duplicate": "Messages failed unsent: a copy of an earlier one within the dedupe window.",
    "over_quota": "Messages held by their tenant's daily quota until the next quota day.",
}
SEGMENTS_PREFIX = "segments:"  # then "lane/encoding": SMS parts of the texts sent
BATCH_STATES = ("idle", "paused", "sent", "alarm")
REDIS_TIMEOUT_SECONDS = 0.5


def counters_redis(broker_url: str) -> redis.Redis | None:
    """The Redis holding the counters: the broker's, when it is Redis (None otherwise)."""
    if not broker_url.startswith(("redis://", "rediss://", "unix://")):
        return None
    return _redis(broker_url)


@functools.cache
def _redis(url: str) -> redis.Redis:
    # Short timeouts: a slow Redis must never hold up a dispatch for its metrics.
    return redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )


def bucket_field(bound: float) -> str:
    return f"latency_le_{bound:g}"


def record_batch(summary: BatchSummary, broker_url: str) -> None:
    """Add one dispatch's figures to the shared counters; never raises (metrics are optional)."""
    client = counters_redis(broker_url)
    if client is None:
        return
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hincrby(COUNTERS_KEY, f"batches_{summary.state}", 1)
        for name in MESSAGE_COUNTERS:
            if value := getattr(summary, name):
                pipe.hincrby(COUNTERS_KEY, name, value)
        for name, value in summary.policy.items():
            pipe.hincrby(COUNTERS_KEY, f"policy_{name}", value)
        for lane_encoding, value in summary.segments.items():
            pipe.hincrby(COUNTERS_KEY, SEGMENTS_PREFIX + lane_encoding, value)
        for seconds in summary.request_seconds:
            pipe.hincrby(COUNTERS_KEY, "requests", 1)
            pipe.hincrbyfloat(COUNTERS_KEY, "latency_sum", seconds)
            for bound in LATENCY_BUCKETS:  # cumulative, as Prometheus buckets are
                if seconds <= bound:
                    pipe.hincrby(COUNTERS_KEY, bucket_field(bound), 1)
        pipe.execute()
    except redis.RedisError as error:
        log.warning("could not record batch metrics in Redis: %s", error)
