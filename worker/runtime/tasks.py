"""The Celery task `outbox.dispatch` and how beat and full batches queue it (wake_dispatchers)."""

from __future__ import annotations

import functools
import gc
import logging
from typing import Any, cast

from celery.signals import worker_init
from kombu.exceptions import KombuError

from worker.database import engine_for
from worker.dispatch.dispatcher import Dispatcher
from worker.dispatch.summary import BatchState
from worker.errors import DispatchAlarm
from worker.ops import counters
from worker.runtime import shutdown
from worker.runtime.celery_app import QUEUE, app, settings
from worker.wiraya.client import WirayaClient

log = logging.getLogger(__name__)


@functools.cache
def dispatcher() -> Dispatcher:
    """This process's dispatcher, with its own engine and pooled HTTP client (after fork)."""
    return Dispatcher(
        settings,
        engine_for(settings.database_url),
        WirayaClient.from_settings(settings),
        on_full_batch=wake_dispatchers,
        should_stop=shutdown.stopping,
        sender_for_key=functools.partial(WirayaClient.for_key, settings),
    )


@worker_init.connect
def _build_dispatcher_before_fork(**_: object) -> None:
    # Build the engine and the HTTP client (its TLS context is most of the cost) once in the
    # main process, before the pool forks: every pool process inherits them ready, instead of
    # each building its own while the pool starts, and the first message waits for neither.
    # No connection is open yet, and both renew their pools in a forked child.
    dispatcher()
    # What is loaded now lives as long as the process: keep the collector from walking it,
    # in the main process and in every pool process, where walking it would also copy each
    # page the fork shares (what Python's gc.freeze documentation recommends before fork).
    gc.freeze()


def queued_tasks() -> int:
    """Tasks waiting in the outbox queue, as the broker counts them (0 if it cannot say)."""
    try:
        # From the app's pool: a new connection (a new Redis client and socket) for every
        # full batch cost ~15 ms of each dispatch before its HTTP call (bench_drain.py).
        with app.connection_or_acquire() as connection:
            channel = cast(Any, connection.default_channel)
            # Declaring is idempotent and, unlike a passive declare, works before any
            # worker has bound the queue.
            return int(channel.queue_declare(queue=QUEUE).message_count)
    except Exception as error:  # a best-effort count: any broker trouble means "unknown"
        log.warning("could not count queued tasks: %s", error)
        return 0


def ready_to_wake() -> None:
    """Load the result store and connect to the broker, as the first wake-up would: the first
    dispatch beat queues after start waits for neither (about 40 ms). Best effort."""
    try:
        app.backend  # noqa: B018  (loaded on first use, after a scan of every package's entry points)
    except Exception as error:  # the first dispatch's result meets it again, and reports it
        log.warning("could not load the result store: %s", error)
    queued_tasks()  # connects, declares the queue; logs what goes wrong


def wake_dispatchers(wanted: int = 1, queued: int | None = None) -> int:
    """Queue dispatch tasks, up to OUTBOX_MAX_PARALLEL_DISPATCHES waiting at once (``queued``:
    the tasks waiting, when the caller has just asked the broker)."""
    waiting = queued_tasks() if queued is None else queued
    count = min(wanted, settings.max_parallel - waiting)
    try:
        for _ in range(count):
            dispatch.delay()
    except (KombuError, OSError) as error:
        log.warning("could not queue a dispatch (beat's next look will): %s", error)
        return 0
    return max(count, 0)


# DispatchAlarm is an expected state (an outage, a refused key): Flower still shows the task
# failed, but Celery logs it in one INFO line, without a traceback per probe.
@app.task(name="outbox.dispatch", ignore_result=False, throws=(DispatchAlarm,))
def dispatch() -> dict[str, Any]:
    """Send due batches for up to two seconds; their summary is the result Flower shows.

    A request-level failure (outage, 5xx, refused key) ends the dispatch and raises.
    """
    with shutdown.dispatching():
        summary = dispatcher().dispatch()
    counters.record_batch(summary, settings.broker_url)  # counters for `outbox metrics`
    if summary.state is BatchState.ALARM:
        raise DispatchAlarm(f"{summary.alarm}; {summary.as_dict()}")
    return summary.as_dict()
