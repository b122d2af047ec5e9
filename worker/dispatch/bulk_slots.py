"""Bulk slots: all but one of a worker's pool processes may claim full bulk batches at once.

Beside a bulk drain, an urgent code waits for the next claim of any pool process, and every
process is busy with a batch of 500 that takes a fifth of a second on a loaded machine. A
process that holds no slot still takes bulk rows, a tenth of a batch at a time, so it comes
back to the claim (which takes urgent rows first) within a short batch's time, and the bulk
drain keeps every process. A slot is an exclusive `flock` on one of the worker's slot files:
the kernel lets go of a dead process's slot, so no crash, kill or hang past the request's
timeout keeps a slot from the processes that are left.
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from models import Priority

if TYPE_CHECKING:
    from worker.dispatch.claim import ClaimedRow

log = logging.getLogger(__name__)

# A process without a slot claims this share of a batch from the bulk lane (at least one row).
SHARE_WITHOUT_SLOT = 10
BULK = int(Priority.BULK)


class BulkSlots:
    """The slots of one worker: ``count`` files in ``directory``; none (``count`` None) means
    every claim may take a full bulk batch (one pool process, tests, the simulator)."""

    def __init__(self, directory: Path | None = None, count: int | None = None) -> None:
        self.directory = directory
        self.count = count
        self._files: list[int] = []
        self._opened_by = 0  # the pid that opened the files: a forked child opens its own
        self._held: int | None = None
        self.last_limit: int | None = None  # the bulk rows the last claim could take

    @classmethod
    def for_worker(cls, pool_processes: int) -> BulkSlots:
        """Slots for a worker of ``pool_processes`` (this process is its main process, before
        the fork): one fewer than its processes; none for a single process or when no folder
        can be written (a read-only file system), said once."""
        if pool_processes < 2:
            return cls()
        directory = Path(tempfile.gettempdir()) / f"wiraya-outbox-bulk-{os.getpid()}"
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as error:
            log.warning("bulk batches not limited to all but one pool process: %s", error)
            return cls()
        # Gone with the worker (pool processes end without running atexit handlers).
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        return cls(directory, pool_processes - 1)

    def limit(self, batch: int, *, shared: bool = True) -> int:
        """How many bulk rows the next claim of ``batch`` rows may take: all while this process
        holds a slot (taken now if one is free), else a tenth; all when not ``shared`` (while a
        request rate is in force, requests are what is scarce)."""
        if self.count is not None and self._opened_by != os.getpid():
            self._slot_files()  # a slot the parent held is not this process's
        if not shared or self.count is None or self._held is not None or self._take():
            self.last_limit = batch
        else:
            self.last_limit = max(1, batch // SHARE_WITHOUT_SLOT)
        return self.last_limit

    def filled(self, rows: Sequence[ClaimedRow], batch: int) -> bool:
        """Whether a claim of ``batch`` rows came back full: every row it asked for, or the
        share of bulk rows it was held to (more are likely due: the dispatch goes on)."""
        if len(rows) == batch:
            return True
        bulk = sum(row.priority == BULK for row in rows)
        return self.last_limit is not None and bulk >= self.last_limit < batch

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Around one batch: the slot its claim took is let go when it ends, however it ends."""
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        """Let go of the slot, if held (the batch holding bulk rows is recorded)."""
        if self._held is not None:
            fcntl.flock(self._held, fcntl.LOCK_UN)
            self._held = None

    def _take(self) -> bool:
        for descriptor in self._slot_files():
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            self._held = descriptor
            return True
        return False

    def _slot_files(self) -> list[int]:
        """This process's own descriptors of the slot files: a descriptor inherited through a
        fork shares its lock with the parent and every sibling, so each process opens its own."""
        if self._opened_by != os.getpid():
            assert self.directory is not None and self.count is not None
            try:
                self._files = [
                    os.open(self.directory / f"slot-{n}", os.O_RDWR | os.O_CREAT, 0o600)
                    for n in range(self.count)
                ]
            except OSError as error:
                log.warning("bulk batches not limited (slot files: %s)", error)
                self.count, self._files = None, []
            self._opened_by, self._held = os.getpid(), None
        return self._files
