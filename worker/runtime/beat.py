"""Celery beat's scheduler for the outbox: it queues dispatches itself, woken early by inserts.

Beat runs no periodic Celery task. Every OUTBOX_POLL_INTERVAL_SECONDS, and as soon as an insert
commits, it counts the due batches and queues that many `outbox.dispatch` tasks (up to
OUTBOX_MAX_PARALLEL_DISPATCHES waiting): an idle outbox sends no task at all, so Flower's
history holds dispatches, not a housekeeping task per second. Between looks it starts the
hourly prune when its schedule in the database says it is due (`worker.runtime.housekeeping`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from celery.beat import Scheduler
from sqlalchemy.exc import SQLAlchemyError

from worker.database import engine_for
from worker.dispatch.dispatcher import Dispatcher
from worker.runtime.beat_lock import BeatLock
from worker.runtime.celery_app import settings
from worker.runtime.housekeeping import Housekeeping, PruneSchedule
from worker.runtime.tasks import queued_tasks, ready_to_wake, wake_dispatchers
from worker.runtime.wakeup import insert_watcher
from worker.wiraya.results import Communication, SendResult

log = logging.getLogger(__name__)


class _CountsOnly:
    """Beat's dispatcher only counts due batches: it never sends (workers do)."""

    def send(self, batch: Sequence[Communication], *, deadline: float | None = None) -> SendResult:
        raise RuntimeError("beat counts due batches; sending is the workers' job")


class OutboxScheduler(Scheduler):
    """Looks for due rows every poll interval and on every insert; queues dispatches for them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        engine = engine_for(settings.database_url)
        self.beat_lock = BeatLock(settings.listen_on)
        if (second := self.beat_lock.take()) is not None:
            log.warning(second)
        self.counter = Dispatcher(settings, engine, _CountsOnly())
        ready_to_wake()
        self.listener = insert_watcher(settings)
        if self.listener is not None:
            self.listener.start()  # hearing inserts before the first look: none falls between
        # Beat decides on the outbox's time (the database's), as the workers do.
        self.clock = self.counter.clock
        self.pruning = PruneSchedule(Housekeeping(engine, settings, clock=self.clock))
        self.interval = settings.poll_interval.total_seconds()
        self.next_look = 0.0  # monotonic: the first look is at start, not an interval later
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        """No periodic Celery task: what one did every second is done here, in beat."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """One round: look for due rows when the interval is up, start a due prune, then wait.

        Returns how long beat should sleep: 0 after waiting for inserts itself.
        """
        if time.monotonic() >= self.next_look:
            self.next_look = time.monotonic() + self.interval
            self.queue_due_dispatches()
        self.pruning.start_if_due(self.clock())
        wait = self.next_look - time.monotonic()
        if wait <= 0:
            return 0.0
        if self.listener is None:
            return wait
        if self.listener.wait(timedelta(seconds=wait)):
            self.queue_due_dispatches()  # an insert committed: no need to wait for the interval
        return 0.0

    def queue_due_dispatches(self) -> int:
        """Queue a dispatch per due batch (none while sending is paused); how many it queued.

        A database or broker that cannot be reached is logged and tried again at the next
        look: beat keeps running, the rows stay due.
        """
        # As many dispatches as may wait are waiting: they will claim what is due, and the
        # count (beside a drain, a walk past every row claimed since the last vacuum) is spared.
        queued = queued_tasks()
        try:
            due = self.counter.due_batches(self.clock(), settings.max_parallel - queued)
        except SQLAlchemyError as error:
            log.warning("could not count due rows (looking again soon): %s", error)
            return 0
        log.debug("beat: due batches: %d", due)
        return wake_dispatchers(due, queued) if due else 0

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        self.beat_lock.release()
        super().close()
