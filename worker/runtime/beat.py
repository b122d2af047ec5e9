"""Celery beat's scheduler for the outbox: the periodic tick, woken early by inserts."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery.beat import Scheduler

from worker.runtime.wakeup import insert_watcher
from worker.settings import Settings

log = logging.getLogger(__name__)


class OutboxScheduler(Scheduler):
    """Runs the beat schedule in memory (a 1 s tick needs no schedule file).

    With OUTBOX_NOTIFY it waits for inserts instead of sleeping (LISTEN on PostgreSQL, the
    newest id on SQLite) and queues a dispatch as soon as one commits: latency without a
    faster tick.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.listener = insert_watcher(Settings.from_environ())
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        self.merge_inplace(self.app.conf.beat_schedule)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval = float(super().tick(*args, **kwargs))
        if self.listener is None or interval <= 0:
            return interval
        if self.listener.wait(timedelta(seconds=interval)):
            self._wake_dispatchers()
        # The wait took the place of beat's sleep: come straight back to run what is due.
        return 0.0

    def _wake_dispatchers(self) -> None:
        from worker.runtime.tasks import wake_dispatchers

        wake_dispatchers(1)

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        super().close()
