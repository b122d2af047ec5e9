"""Warm shutdown of a pool process: SIGTERM mid-batch records the batch, it does not lose it.

Celery's pool processes die at once on SIGTERM (Celery resets the signal to its default in
each child). When the whole process group gets it (systemd's KillMode=control-group, `kill
-TERM -- -PGID`, container inits that signal the group), a child killed mid-request loses the
API's answers: those messages are sent again, and its rows wait for their lease. Here a child
that is dispatching finishes the request in flight (bounded by its deadline), records every
answer, releases the rows it has not sent at once, and then leaves; an idle child leaves at
once. The main process's own warm shutdown (SIGTERM to it alone: `docker stop`) is Celery's.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

# After the batch, the child signals itself again once its result is on its way to the
# main process (a pipe write): then it is idle and leaves.
LEAVE_AFTER = 0.2

_stopping = threading.Event()
_dispatching = threading.Event()


def stopping() -> bool:
    """True once this process was asked to stop: no new batch, no new request."""
    return _stopping.is_set()


@contextmanager
def dispatching() -> Iterator[None]:
    """Marks a dispatch under way; a stop asked meanwhile takes effect when it ends.

    The handler is installed here, at the first dispatch: billiard sets its own after the
    pool process's initializer has run (it leaves at once, which an idle process may do).
    """
    if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        signal.signal(signal.SIGTERM, _on_sigterm)
    _dispatching.set()
    try:
        yield
    finally:
        _dispatching.clear()
        if _stopping.is_set():
            timer = threading.Timer(LEAVE_AFTER, os.kill, (os.getpid(), signal.SIGTERM))
            timer.daemon = True
            timer.start()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _stopping.set()
    if not _dispatching.is_set():
        raise SystemExit(0)
