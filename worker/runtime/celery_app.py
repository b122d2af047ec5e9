"""The Celery application, configured for a dispatcher whose only truth is the outbox table."""

from __future__ import annotations

import logging
import sys
from functools import cached_property
from typing import Any

import billiard.pool
from celery import Celery
from celery.apps.worker import Worker
from celery.signals import (
    beat_init,
    celeryd_after_setup,
    import_modules,
    worker_init,
    worker_process_init,
)
from kombu import Exchange, Queue
from sqlalchemy.exc import OperationalError

from worker.database import dispose_engines, engine_for
from worker.dispatch.dispatcher import DISPATCH_BUDGET
from worker.errors import MissingRight, SchemaBehind, SettingsError
from worker.ops import api_target
from worker.ops.hints import clock_line
from worker.ops.privileges import Duty, beat_duties, worker_duties
from worker.ops.start_check import require_rights
from worker.runtime.broker import transport_options
from worker.settings import Settings

QUEUE = "outbox"
log = logging.getLogger(__name__)

# A pool process that ends waits until the main process has read the result of every task
# it ran, up to 300 x 0.1 s. When warm shutdown starts just as tasks are handed to the pool
# (docker stop right after a start, mid-burst), the main process has stopped reading: each
# such process then waited the full 30 s before the worker could exit. What it waits for is
# a dispatch's summary for Flower (its rows are recorded already), so wait 2 s at most.
billiard.pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_LIMIT = 20


def load_settings() -> Settings:
    """The process's settings; an invalid one stops it with one line naming the variable."""
    try:
        return Settings.from_environ()
    except SettingsError as error:
        print(f"outbox: invalid configuration: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def wake_up_queue() -> Queue:
    """The task queue, declared as a plain ``queue_declare(queue=QUEUE)`` declares it.

    `tasks.queued_tasks` counts waiting tasks by declaring the queue with kombu's defaults
    (not durable, auto-delete). On RabbitMQ every declaration of a queue must match the first
    one, or the broker refuses it (PRECONDITION_FAILED) and a worker starting after beat's
    first wake-up exits. The queue holds only wake-ups, so losing it with its last consumer
    or a broker restart loses nothing: the next tick queues new ones. Redis and the
    filesystem broker ignore both flags for this queue.
    """
    return Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE, durable=False, auto_delete=True)


class OutboxWorker(Worker):
    """`celery -A worker worker` without the start-up rounds the outbox has no use for."""

    def prepare_args(self, **kwargs: Any) -> dict[str, Any]:
        # Mingle asks every other worker for its revoked tasks and logical clock at start
        # and waits a full second for answers; gossip has each worker follow every other
        # worker's events. Nothing here is revoked and a wake-up delivered twice is
        # harmless, so both only delay the first dispatch. Heartbeats (Flower's Workers
        # page) and remote control (`celery inspect`) stay.
        kwargs.update(without_mingle=True, without_gossip=True)
        return super().prepare_args(**kwargs)


class OutboxCelery(Celery):
    """Celery whose `celery worker` is the OutboxWorker."""

    @cached_property
    def Worker(self) -> type[Worker]:
        return self.subclass_with_self(OutboxWorker)


def create_app(settings: Settings) -> Celery:
    """A Celery app for ``settings``; every choice below serves "Redis holds only wake-ups"."""
    app = OutboxCelery(
        "wiraya-outbox", broker=settings.broker_url, include=["worker.runtime.tasks"]
    )
    seconds = settings.poll_interval.total_seconds()
    app.conf.update(
        # Only the demo's filesystem:// broker needs options (worker/runtime/broker.py).
        broker_transport_options=transport_options(settings),
        task_default_queue=QUEUE,
        task_queues=[wake_up_queue()],
        # Acknowledge on receipt: a task lost with its worker is harmless, since the rows
        # it claimed come back when their lease ends, and beat queues new tasks for them.
        # Late acks would only add redeliveries of stale wake-ups after the visibility timeout.
        task_acks_late=False,
        # One task at a time per process: a prefetched dispatch would sit idle behind a
        # slow HTTP call while another process could run it.
        worker_prefetch_multiplier=1,
        # Results are kept only for dispatch summaries (the task opts in). Without a Redis
        # broker there is no result store at all.
        task_ignore_result=True,
        result_backend=settings.broker_url if settings.broker_url.startswith("redis") else None,
        result_expires=3600,
        # Task events feed Flower: sent, started, succeeded with the summary, failed.
        worker_send_task_events=True,
        task_send_sent_event=True,
        # Keep reconnecting to the broker for ever: an outage of Redis stops wake-ups,
        # not the workers.
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # A dispatch that outlives the lease of its last batch is killed: its rows are
        # someone else's by then. That batch was claimed within the budget.
        task_time_limit=int((settings.lease + DISPATCH_BUDGET).total_seconds()),
        # A pool process per dispatch allowed at once (unless --concurrency says otherwise):
        # a dispatch mostly waits for the API, so the CPU count is the wrong default; the
        # database may allow fewer (SQLite takes one writer at a time).
        worker_concurrency=settings.database.worker_processes(settings.max_parallel),
        worker_hijack_root_logger=True,
        # Beat runs no periodic task: it counts due rows and queues dispatches itself
        # (worker/runtime/beat.py), so an idle outbox adds nothing to Flower's history.
        beat_scheduler="worker.runtime.beat:OutboxScheduler",
        beat_max_loop_interval=max(seconds, 0.1),
    )
    return app


_api_announced = False


@celeryd_after_setup.connect  # the worker
@beat_init.connect  # beat
@import_modules.connect  # Flower (the worker and beat send it before their logging is set up)
def _say_which_api(**_: object) -> None:
    # Once per process, where its log goes: which API messages go to (never the key).
    global _api_announced
    if _api_announced or not logging.getLogger().handlers:
        return
    log.info("%s", api_target.describe(settings, settings.database_url))
    _api_announced = True


@import_modules.connect  # in Flower's process, once its web handlers are loaded
def _flower_metrics_behind_its_login(**_: object) -> None:
    # Flower serves /metrics without asking for FLOWER_BASIC_AUTH, which every other page of
    # it asks for: the metrics name the workers, their hosts and the task counts. Its handler
    # gets the same guard as the other pages. Looked up, never imported: a worker or beat
    # process loads no Flower (only Flower's own process has it loaded).
    monitor = sys.modules.get("flower.views.monitor")
    web = sys.modules.get("tornado.web")
    if monitor is None or web is None or getattr(monitor.Metrics.get, "behind_login", False):
        return
    guarded = web.authenticated(monitor.Metrics.get)
    guarded.behind_login = True
    monitor.Metrics.get = guarded


def require_rights_at_start(process: str, duties: tuple[Duty, ...]) -> None:
    """Stop the process with one line when its role lacks a right its duties need, before it
    sends anything it could not record. A database not reachable yet is no reason to stop:
    the process waits for it as it always has."""
    engine = engine_for(settings.database_url)
    try:
        require_rights(engine, process, duties)
        skew = clock_line(engine)
    except (MissingRight, SchemaBehind) as error:
        print(f"outbox: {error}", file=sys.stderr)
        raise SystemExit(3) from None
    except OperationalError as error:
        log.warning(
            "%s: rights not checked, the database is not reachable: %s", process, error.orig
        )
        return
    if skew is not None:
        log.warning("%s: %s", process, skew)


@worker_init.connect
def _check_the_workers_rights(**_: object) -> None:
    require_rights_at_start("worker", worker_duties())


@beat_init.connect
def _check_beats_rights(**_: object) -> None:
    require_rights_at_start("beat", beat_duties())


@worker_process_init.connect
def _fresh_connections_after_fork(**_: object) -> None:
    # Database connections must never cross a fork: each pool process opens its own.
    dispose_engines()


settings = load_settings()
app = create_app(settings)
